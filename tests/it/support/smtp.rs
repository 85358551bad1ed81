//! A real SMTP server in the test process (mailin-embedded) on 127.0.0.1, recording every
//! message, and able to refuse mail with a chosen reply code.
//!
//! mailin-embedded has no shutdown: a server runs on its own thread until the test binary
//! exits. A test that needs "SMTP down, then up" takes a [`ClosedPort`] first (connections to
//! it are refused) and later starts a server on it with [`SmtpServer::start_on`].

use super::ClosedPort;
use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK, Response};
use mailin_embedded::{Action, AuthMechanism, Handler, Server, SslConfig};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The envelope sender (MAIL FROM).
    pub from: String,
    /// The envelope recipients (RCPT TO), in order.
    pub to: Vec<String>,
    /// The message as sent: headers, blank line, body (transfer-encoded).
    pub data: Vec<u8>,
}

impl Mail {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The first header called `name` (case-insensitive), folded lines unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body with its Content-Transfer-Encoding (7bit, quoted-printable or base64) undone.
    pub fn body(&self) -> String {
        let text = self.text();
        let raw = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        match self
            .header("Content-Transfer-Encoding")
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => {
                use base64::Engine;
                let compact: String = raw.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 body");
                String::from_utf8(bytes).expect("utf-8 body")
            }
            Some("quoted-printable") => decode_quoted_printable(raw),
            _ => raw.to_string(),
        }
    }
}

fn decode_quoted_printable(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.replace("=\r\n", "").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 body")
}

/// At which step of the SMTP transaction to refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    MailFrom,
    RcptTo,
    /// After the message data was sent: the server took it in and still said no.
    DataEnd,
}

/// How long to hold a message's final reply.
enum Stall {
    For(Duration),
    /// Until the test drops (or uses) the [`Release`] paired with this receiver.
    Until(std::sync::mpsc::Receiver<()>),
}

/// Lets the message held by [`SmtpServer::hold_next`] be accepted, when dropped.
pub struct Release(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

#[derive(Clone, Debug)]
struct Refusal {
    stage: Stage,
    code: u16,
    text: String,
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<Mail>>,
    /// One entry per coming transaction (MAIL FROM) to refuse.
    refusals: Mutex<VecDeque<Refusal>>,
    /// One entry per coming message to hold at end of data before accepting it.
    stalls: Mutex<VecDeque<Stall>>,
    /// The one (user, password) AUTH accepts, when AUTH is offered.
    credentials: Option<(String, String)>,
    count: Mutex<Option<watch::Sender<usize>>>,
}

/// The per-session handler; mailin clones it for each connection, the state is shared.
#[derive(Clone)]
struct Recorder {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    /// The refusal taken for the transaction in progress.
    refusal: Option<Refusal>,
}

impl Recorder {
    fn refuse_at(&self, stage: Stage) -> Option<Response> {
        let r = self.refusal.as_ref().filter(|r| r.stage == stage)?;
        let mut response = Response::custom(r.code, r.text.clone());
        if stage == Stage::DataEnd {
            // mailin stays in its DATA state after refusing a message, so the client's QUIT
            // would be read as message text and never answered. A real server answers it;
            // closing after the reply is the nearest mailin can do.
            response.action = Action::Close;
        }
        Some(response)
    }
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_string();
        self.to.clear();
        self.data.clear();
        self.refusal = self.shared.refusals.lock().unwrap().pop_front();
        self.refuse_at(Stage::MailFrom).unwrap_or(OK)
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if let Some(r) = self.refuse_at(Stage::RcptTo) {
            return r;
        }
        self.to.push(to.to_string());
        OK
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.auth_login(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        match &self.shared.credentials {
            Some((u, p)) if u == user && p == password => AUTH_OK,
            _ => INVALID_CREDENTIALS,
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(r) = self.refuse_at(Stage::DataEnd) {
            return r;
        }
        let stall = self.shared.stalls.lock().unwrap().pop_front();
        // This session's own thread: other connections are served meanwhile.
        match stall {
            Some(Stall::For(delay)) => std::thread::sleep(delay),
            // Err once the Release is dropped: that is the signal.
            Some(Stall::Until(released)) => _ = released.recv(),
            None => {}
        }
        let mail = Mail {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.data),
        };
        let n = {
            let mut mails = self.shared.mails.lock().unwrap();
            mails.push(mail);
            mails.len()
        };
        if let Some(tx) = self.shared.count.lock().unwrap().as_ref() {
            tx.send_replace(n);
        }
        OK
    }
}

/// A certificate for STARTTLS, written to files mailin can load.
pub struct TestCert {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    /// Self-signed for `localhost` and 127.0.0.1 (lettre checks the name even when told to
    /// accept an invalid certificate, so the subjectAltName must match the SMTP host).
    pub fn localhost() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        TestCert {
            _dir: dir,
            cert,
            key,
        }
    }
}

pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    count: watch::Receiver<usize>,
}

fn fresh_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind the SMTP server")
}

impl SmtpServer {
    /// Plain SMTP on a fresh 127.0.0.1 port.
    pub fn start() -> SmtpServer {
        SmtpServer::start_with(fresh_listener(), None, None)
    }

    /// SMTP offering STARTTLS with `cert`, on a fresh port.
    pub fn start_tls(cert: &TestCert) -> SmtpServer {
        SmtpServer::start_with(fresh_listener(), Some(cert), None)
    }

    /// STARTTLS with `cert`, and AUTH (PLAIN, LOGIN; only after STARTTLS) accepting just
    /// `user` with `password`.
    pub fn start_tls_auth(cert: &TestCert, user: &str, password: &str) -> SmtpServer {
        SmtpServer::start_with(
            fresh_listener(),
            Some(cert),
            Some((user.to_string(), password.to_string())),
        )
    }

    /// On a port that refused connections until now (needs a tokio runtime); with `cert`,
    /// STARTTLS is offered.
    pub fn start_on(port: ClosedPort, cert: Option<&TestCert>) -> SmtpServer {
        SmtpServer::start_with(port.listen_std(), cert, None)
    }

    fn start_with(
        listener: TcpListener,
        cert: Option<&TestCert>,
        credentials: Option<(String, String)>,
    ) -> SmtpServer {
        let (tx, count) = watch::channel(0);
        let auth = credentials.is_some();
        let shared = Arc::new(Shared {
            count: Mutex::new(Some(tx)),
            credentials,
            ..Default::default()
        });
        let recorder = Recorder {
            shared: shared.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
            refusal: None,
        };
        // Bound before the thread starts, so a client never races the server's bind.
        let addr = listener.local_addr().unwrap();
        let mut server = Server::new(recorder);
        server
            .with_name("localhost")
            .with_num_threads(2)
            .with_tcp_listener(listener);
        if let Some(c) = cert {
            server
                .with_ssl(SslConfig::SelfSigned {
                    cert_path: c.cert.display().to_string(),
                    key_path: c.key.display().to_string(),
                })
                .expect("load the test certificate");
        }
        if auth {
            server
                .with_auth(AuthMechanism::Plain)
                .with_auth(AuthMechanism::Login);
        }
        std::thread::spawn(move || {
            // Runs until the test binary exits: mailin-embedded has no shutdown.
            let _ = server.serve();
        });
        SmtpServer {
            addr,
            shared,
            count,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every accepted message so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.mails.lock().unwrap().clone()
    }

    /// Refuses the next `n` transactions at `stage` with `code` (4xx: try later, 5xx: no).
    pub fn refuse_next(&self, n: usize, stage: Stage, code: u16) {
        let text = if code >= 500 {
            "Refused by the test server"
        } else {
            "Try again later, says the test server"
        };
        self.shared
            .refusals
            .lock()
            .unwrap()
            .extend((0..n).map(|_| Refusal {
                stage,
                code,
                text: text.to_string(),
            }));
    }

    /// Holds the reply to the next `n` messages for `delay` after their data arrived, then
    /// accepts them: a client that gave up by then does not know they were delivered.
    pub fn stall_next(&self, n: usize, delay: Duration) {
        self.shared
            .stalls
            .lock()
            .unwrap()
            .extend((0..n).map(|_| Stall::For(delay)));
    }

    /// Holds the reply to the next message until the returned [`Release`] is dropped, then
    /// accepts it: a test can let a client time out first, whatever the machine's speed.
    pub fn hold_next(&self) -> Release {
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared
            .stalls
            .lock()
            .unwrap()
            .push_back(Stall::Until(rx));
        Release(tx)
    }

    /// Waits until at least `n` messages were accepted and returns them all; panics after
    /// `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let mut rx = self.count.clone();
        if tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n))
            .await
            .is_err()
        {
            panic!(
                "SMTP server: waited {timeout:?} for {n} messages; got {}",
                self.mails().len()
            );
        }
        self.mails()
    }
}
