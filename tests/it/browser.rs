//! A real browser for the status page's tests: headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
//! ended by NUL on file descriptors 3 and 4), so no WebDriver and no WebSocket crate. The pipe
//! lets a test turn JavaScript off for a page (`Emulation.setScriptExecutionDisabled`) and
//! still read its DOM, which `--dump-dom` cannot do (it prints nothing with scripts off).
//!
//! Chromium is told not to resolve any name but loopback, and to start no background
//! networking: nothing leaves the machine.

use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one DevTools command may take on a busy machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The chromium binary: `RECWATCH_CHROMIUM`, else `chromium` on the PATH. A missing browser
/// fails the test with the fix; it never passes silently.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RECWATCH_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the status page tests need Chromium and `chromium` is not on the PATH: run `bash .ci/deps` \
             (it installs Debian's chromium package), or set RECWATCH_CHROMIUM to a chromium binary"
        )
    })
}

pub struct Browser {
    child: Child,
    commands: File,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// A pipe whose two ends close on exec (the child gets copies on 3 and 4 only).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens one tab; `javascript: false` turns
    /// scripts off in it.
    pub fn launch(javascript: bool) -> Browser {
        let bin = chromium();
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (msg_read, msg_write) = pipe();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--window-size=1280,900",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only dup/dup2 run, which are async-signal-safe. The
        // copies above 10 first, so neither target number is overwritten before it is read;
        // dup2 clears close-on-exec on 3 and 4.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(cmd_read, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(msg_write, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run `bash .ci/deps` to install Debian's chromium package",
                bin.display()
            )
        });
        // SAFETY: the child has its copies; these are ours alone now.
        unsafe {
            libc::close(cmd_read);
            libc::close(msg_write);
        }
        // SAFETY: each descriptor is open and owned by exactly one File from here on.
        let commands = unsafe { File::from_raw_fd(cmd_write) };
        let reader = unsafe { File::from_raw_fd(msg_read) };
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        if !javascript {
            b.call(
                "Emulation.setScriptExecutionDisabled",
                json!({"value": true}),
            );
        }
        b
    }

    /// Sends a command (to the tab once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium stopped reading commands ({method}): {e}"));
        let reply = self.wait_message(method, |m| m["id"] == json!(id));
        if let Some(err) = reply.get("error") {
            panic!("chromium refused {method}: {err}");
        }
        reply["result"].clone()
    }

    fn wait_message(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) if want(&m) => return m,
                Ok(_) => {}
                Err(e) => panic!("no answer from chromium to {what} within {CALL_TIMEOUT:?}: {e}"),
            }
        }
    }

    /// Opens `url` in the tab and waits for its load event (deferred scripts have run).
    pub fn open(&mut self, url: &str) {
        self.open_landing(url, url)
    }

    /// Opens `url` and waits until the document loaded is `landing` (after redirects).
    pub fn open_landing(&mut self, url: &str, landing: &str) {
        // Events of an earlier page are of no interest now.
        while self.messages.try_recv().is_ok() {}
        let nav = self.call("Page.navigate", json!({"url": url}));
        if let Some(e) = nav.get("errorText") {
            panic!("chromium could not open {url}: {e}");
        }
        // A load event of the page before (a reload it started) may still arrive: wait
        // until the loaded document is the one asked for.
        loop {
            self.wait_message("the load event", |m| m["method"] == "Page.loadEventFired");
            let doc = self.call("DOM.getDocument", json!({"depth": 0}));
            if doc["root"]["documentURL"].as_str() == Some(landing) {
                return;
            }
        }
    }

    /// The tab's DOM now, as HTML (read through DevTools, so it works with scripts off).
    pub fn html(&mut self) -> String {
        let doc = self.call("DOM.getDocument", json!({"depth": -1}));
        let root = doc["root"]["nodeId"].clone();
        let html = self.call("DOM.getOuterHTML", json!({"nodeId": root}));
        html["outerHTML"].as_str().unwrap().to_string()
    }

    /// Reads the DOM until `ready` holds (e.g. the page's script has run), or panics.
    pub fn html_when(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let html = self.html();
            if ready(&html) {
                return html;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the page is:\n{html}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
