//! Loopback receivers that behave like the chat vendors: each checks the vendor's signature
//! or key (with its own code written from the vendor's documentation, not recwatch's), checks
//! the body's shape, and answers the way the vendor does: HTTP 200 with `code`/`errcode` for
//! Feishu, DingTalk and WeCom, `ok` for Slack, 202 for Teams and PagerDuty. A test can plan
//! answers (a 200 with an error code, a rate limit) and a DingTalk-like per-minute limit.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Feishu,
    DingTalk,
    WeCom,
    Slack,
    Teams,
    PagerDuty,
}

/// The credentials the receiver expects.
pub const FEISHU_SECRET: &str = "feishu-test-secret";
pub const DINGTALK_SECRET: &str = "SECdingtalk-test-secret";
pub const DINGTALK_TOKEN: &str = "dingtalk-token-0123456789";
pub const WECOM_KEY: &str = "wecom-key-0123456789";
pub const ROUTING_KEY: &str = "R0123456789abcdef0123456789abcde";

/// A message the receiver accepted: its JSON body.
#[derive(Clone, Debug)]
pub struct Message {
    pub body: Value,
    /// Every human-readable text of the message joined (title and body), to search in.
    pub text: String,
}

/// One request and what was answered.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub status: u16,
    pub answer: String,
    pub accepted: bool,
}

/// A planned answer: status, body, extra headers.
type Planned = (u16, String, Vec<(String, String)>);

struct Shared {
    vendor: Vendor,
    accepted: Mutex<Vec<Message>>,
    attempts: Mutex<Vec<Attempt>>,
    /// Planned answers: (status, body, headers).
    plan: Mutex<VecDeque<Planned>>,
    /// At most this many accepted in any window, like DingTalk (20 a minute); over it, the
    /// vendor's rate-limit answer, and the request counts as throttled.
    limit: Mutex<Option<(usize, Duration, VecDeque<Instant>)>>,
    throttled: Mutex<usize>,
    counts: watch::Sender<(usize, usize)>,
}

pub struct ChatReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ChatReceiver {
    pub async fn start(vendor: Vendor) -> ChatReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            vendor,
            accepted: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            plan: Mutex::new(VecDeque::new()),
            limit: Mutex::new(None),
            throttled: Mutex::new(0),
            counts: watch::channel((0, 0)).0,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ChatReceiver { addr, shared, task }
    }

    /// The URL to configure, credentials included the way the vendor issues them.
    pub fn url(&self) -> String {
        let base = format!("http://{}", self.addr);
        match self.shared.vendor {
            Vendor::Feishu => format!("{base}/open-apis/bot/v2/hook/feishu-hook-0123456789abcdef"),
            Vendor::DingTalk => format!("{base}/robot/send?access_token={DINGTALK_TOKEN}"),
            Vendor::WeCom => format!("{base}/cgi-bin/webhook/send?key={WECOM_KEY}"),
            Vendor::Slack => format!("{base}/services/T000/B000/slack0123456789abcdef"),
            Vendor::Teams => {
                format!("{base}/workflows/x/triggers/manual/paths/invoke?sig=teams0123456789")
            }
            Vendor::PagerDuty => format!("{base}/v2/enqueue"),
        }
    }

    /// The channel's TOML section, named `name`.
    pub fn toml(&self, name: &str, extra: &str) -> String {
        let url = self.url();
        let body = match self.shared.vendor {
            Vendor::Feishu => {
                format!("[[notify.feishu]]\nurl = \"{url}\"\nsecret = \"{FEISHU_SECRET}\"\n")
            }
            Vendor::DingTalk => {
                format!("[[notify.dingtalk]]\nurl = \"{url}\"\nsecret = \"{DINGTALK_SECRET}\"\n")
            }
            Vendor::WeCom => format!("[[notify.wecom]]\nurl = \"{url}\"\n"),
            Vendor::Slack => format!("[[notify.slack]]\nurl = \"{url}\"\n"),
            Vendor::Teams => format!("[[notify.teams]]\nurl = \"{url}\"\n"),
            Vendor::PagerDuty => {
                format!("[[notify.pagerduty]]\nurl = \"{url}\"\nrouting_key = \"{ROUTING_KEY}\"\n")
            }
        };
        format!("\n{body}name = \"{name}\"\ntimeout = \"5s\"\n{extra}\n")
    }

    /// The vendor's answer for the next `n` requests: `status`, `body`, `headers`.
    pub fn answer_next(&self, n: usize, status: u16, body: &str, headers: &[(&str, &str)]) {
        let mut plan = self.shared.plan.lock().unwrap();
        for _ in 0..n {
            plan.push_back((
                status,
                body.to_string(),
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
        }
    }

    /// Forgets the planned answers: the vendor behaves from now on.
    pub fn behave(&self) {
        self.shared.plan.lock().unwrap().clear();
    }

    /// Accept at most `n` messages in any `per` (DingTalk: 20 a minute); more are answered
    /// with the vendor's rate-limit answer and counted as throttled.
    pub fn limit(&self, n: usize, per: Duration) {
        *self.shared.limit.lock().unwrap() = Some((n, per, VecDeque::new()));
    }

    pub fn throttled(&self) -> usize {
        *self.shared.throttled.lock().unwrap()
    }

    pub fn accepted(&self) -> Vec<Message> {
        self.shared.accepted.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// Waits until `ok(accepted messages)` holds; panics after `timeout` with what came.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let mut rx = self.shared.counts.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if ok(&self.accepted()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "{:?} receiver: waited {timeout:?} for {what}; accepted {:?}; attempts {:?}",
                self.shared.vendor,
                self.accepted().iter().map(|m| &m.text).collect::<Vec<_>>(),
                self.attempts()
            );
        }
        self.accepted()
    }

    /// Waits for `n` requests, accepted or not.
    pub async fn wait_attempts(&self, n: usize, timeout: Duration) -> Vec<Attempt> {
        let mut rx = self.shared.counts.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|(_, a)| *a >= n))
            .await
            .is_err()
        {
            panic!(
                "{:?} receiver: waited {timeout:?} for {n} requests; got {:?}",
                self.shared.vendor,
                self.attempts()
            );
        }
        self.attempts()
    }
}

impl Drop for ChatReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let planned = shared.plan.lock().unwrap().pop_front();
    let (status, answer, extra, accepted) = match planned {
        Some((status, body, headers)) => (status, body, headers, None),
        None => match check(shared.vendor, &query, &headers, uri.path(), &body) {
            Err((status, answer)) => (status, answer, Vec::new(), None),
            Ok(message) => {
                if over_limit(&shared) {
                    *shared.throttled.lock().unwrap() += 1;
                    let (status, answer) = rate_limited(shared.vendor);
                    (status, answer, Vec::new(), None)
                } else {
                    let (status, answer) = success(shared.vendor);
                    (status, answer, Vec::new(), Some(message))
                }
            }
        },
    };
    shared.attempts.lock().unwrap().push(Attempt {
        status,
        answer: answer.clone(),
        accepted: accepted.is_some(),
    });
    if let Some(m) = accepted {
        shared.accepted.lock().unwrap().push(m);
    }
    let a = shared.accepted.lock().unwrap().len();
    let n = shared.attempts.lock().unwrap().len();
    shared.counts.send_replace((a, n));
    let mut response = (StatusCode::from_u16(status).unwrap(), answer).into_response();
    for (k, v) in extra {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

/// Counts an accepted message against the limit; true if it is over.
fn over_limit(shared: &Shared) -> bool {
    let mut limit = shared.limit.lock().unwrap();
    let Some((n, per, times)) = limit.as_mut() else {
        return false;
    };
    let now = Instant::now();
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= *per)
    {
        times.pop_front();
    }
    if times.len() >= *n {
        return true;
    }
    times.push_back(now);
    false
}

fn success(vendor: Vendor) -> (u16, String) {
    match vendor {
        Vendor::Feishu => (200, r#"{"code":0,"msg":"success","data":{}}"#.into()),
        Vendor::DingTalk | Vendor::WeCom => (200, r#"{"errcode":0,"errmsg":"ok"}"#.into()),
        Vendor::Slack => (200, "ok".into()),
        Vendor::Teams => (202, String::new()),
        Vendor::PagerDuty => (
            202,
            r#"{"status":"success","message":"Event processed","dedup_key":"k"}"#.into(),
        ),
    }
}

fn rate_limited(vendor: Vendor) -> (u16, String) {
    match vendor {
        Vendor::Feishu => (200, r#"{"code":11232,"msg":"frequency limited"}"#.into()),
        Vendor::DingTalk => (
            200,
            r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#.into(),
        ),
        Vendor::WeCom => (
            200,
            r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#.into(),
        ),
        Vendor::Slack | Vendor::Teams | Vendor::PagerDuty => (429, "rate_limited".into()),
    }
}

fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The vendor's checks; `Err` is the vendor's refusal (status, body).
fn check(
    vendor: Vendor,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Result<Message, (u16, String)> {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err((400, "content type is not JSON".into()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| (400, format!("not JSON: {e}")))?;
    let now = chrono::Utc::now();
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let text = match vendor {
        Vendor::Feishu => {
            if !path.ends_with("/feishu-hook-0123456789abcdef") {
                return Err((404, "no such hook".into()));
            }
            let bad = json!({"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}).to_string();
            let ts = str_at(&v, "/timestamp").ok_or((200, bad.clone()))?;
            let secs: i64 = ts.parse().map_err(|_| (200, bad.clone()))?;
            // Feishu: key = "{timestamp}\n{secret}", message empty, timestamp in seconds.
            let want = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
            if str_at(&v, "/sign").as_deref() != Some(want.as_str())
                || (now.timestamp() - secs).abs() > 3600
            {
                return Err((200, bad));
            }
            if v["msg_type"] != "interactive" {
                return Err((200, json!({"code":9499,"msg":"Bad Request"}).to_string()));
            }
            format!(
                "{}\n{}",
                str_at(&v, "/card/header/title/content").unwrap_or_default(),
                str_at(&v, "/card/elements/0/text/content").unwrap_or_default()
            )
        }
        Vendor::DingTalk => {
            let bad = json!({"errcode":310000,"errmsg":"sign not match"}).to_string();
            if query.get("access_token").map(String::as_str) != Some(DINGTALK_TOKEN) {
                return Err((
                    200,
                    json!({"errcode":300001,"errmsg":"token is not exist"}).to_string(),
                ));
            }
            // DingTalk: key = secret, message = "{timestamp}\n{secret}", milliseconds; axum's
            // Query has already URL-decoded the sign.
            let ts = query.get("timestamp").ok_or((200, bad.clone()))?;
            let ms: i64 = ts.parse().map_err(|_| (200, bad.clone()))?;
            let want = hmac_b64(
                DINGTALK_SECRET.as_bytes(),
                format!("{ts}\n{DINGTALK_SECRET}").as_bytes(),
            );
            if query.get("sign") != Some(&want) || (now.timestamp_millis() - ms).abs() > 3_600_000 {
                return Err((200, bad));
            }
            if v["msgtype"] != "markdown" {
                return Err((
                    200,
                    json!({"errcode":40035,"errmsg":"invalid msgtype"}).to_string(),
                ));
            }
            format!(
                "{}\n{}",
                str_at(&v, "/markdown/title").unwrap_or_default(),
                str_at(&v, "/markdown/text").unwrap_or_default()
            )
        }
        Vendor::WeCom => {
            if query.get("key").map(String::as_str) != Some(WECOM_KEY) {
                return Err((
                    200,
                    json!({"errcode":93000,"errmsg":"invalid webhook url"}).to_string(),
                ));
            }
            let content = str_at(&v, "/markdown/content").unwrap_or_default();
            if v["msgtype"] != "markdown" || content.is_empty() {
                return Err((
                    200,
                    json!({"errcode":40008,"errmsg":"invalid message type"}).to_string(),
                ));
            }
            if content.len() > 4096 {
                return Err((
                    200,
                    json!({"errcode":40058,"errmsg":"markdown.content exceed max length 4096"})
                        .to_string(),
                ));
            }
            content
        }
        Vendor::Slack => {
            if !path.ends_with("/slack0123456789abcdef") {
                return Err((403, "invalid_token".into()));
            }
            let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
            let sections: Vec<String> = blocks
                .iter()
                .skip(1)
                .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
                .collect();
            let total: usize = sections.iter().map(|s| s.chars().count()).sum();
            if v["blocks"][0]["type"] != "header"
                || str_at(&v, "/text").is_none()
                || blocks.len() > 50
                || total > 40_000
                || sections.iter().any(|s| s.chars().count() > 3000)
                || blocks.iter().skip(1).any(|b| b["type"] != "section")
            {
                return Err((400, "invalid_blocks".into()));
            }
            format!(
                "{}\n{}",
                str_at(&v, "/blocks/0/text/text").unwrap_or_default(),
                sections.join("\n")
            )
        }
        Vendor::Teams => {
            if query.get("sig").map(String::as_str) != Some("teams0123456789") {
                return Err((401, "unauthorized".into()));
            }
            let card = &v["attachments"][0];
            if v["type"] != "message"
                || card["contentType"] != "application/vnd.microsoft.card.adaptive"
                || card["content"]["type"] != "AdaptiveCard"
            {
                return Err((400, "not an adaptive card".into()));
            }
            card["content"]["body"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
        Vendor::PagerDuty => {
            if v["routing_key"] != ROUTING_KEY {
                return Err((400, json!({"status":"invalid event","message":"Event object is invalid","errors":["Invalid routing key"]}).to_string()));
            }
            let action = str_at(&v, "/event_action").unwrap_or_default();
            let key = str_at(&v, "/dedup_key").unwrap_or_default();
            if key.is_empty() || !matches!(action.as_str(), "trigger" | "resolve") {
                return Err((400, json!({"status":"invalid event"}).to_string()));
            }
            if action == "trigger" && str_at(&v, "/payload/summary").is_none() {
                return Err((
                    400,
                    json!({"status":"invalid event","errors":["payload.summary is missing"]})
                        .to_string(),
                ));
            }
            format!(
                "{action} {key} {}",
                str_at(&v, "/payload/summary").unwrap_or_default()
            )
        }
    };
    Ok(Message { body: v, text })
}
