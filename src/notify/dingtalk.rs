//! DingTalk custom robot: a markdown message, signed in the query string when the robot has
//! a secret (`&timestamp=...&sign=...`, a different formula from Feishu's).
//!
//! DingTalk answers HTTP 200 with `{"errcode": ..., "errmsg": ...}`: 310000 is a bad
//! signature, clock, keyword or IP; 130101 means more than 20 messages in a minute, after
//! which the robot is throttled for 10 minutes. The lane's pace keeps us under that, and
//! grouping keeps a storm to a few messages.

use super::chat::{self, Card, ChatChannel, ChatVendor, Markdown, Style};
use super::http::{Answer, Codes, code_verdict};
use super::{DeliveryError, Retry, Window};
use crate::config::{ChatConfig, ConfigError};
use crate::domain::Alert;
use crate::secret::Secret;
use base64::Engine;
use recwatch_rtc::sign::hmac_raw;
use serde_json::json;
use std::time::Duration;
use url::Url;

/// DingTalk documents no byte limit for markdown; 20,000 bytes is what robots are known to
/// take.
pub const LIMIT: usize = 20_000;

/// 20 messages a minute per robot; the window is two seconds longer than DingTalk's so that
/// network delays cannot squeeze 21 sends into its minute.
const PACE: &[Window] = &[Window::new(20, Duration::from_secs(62))];

/// What DingTalk does after 130101: throttles the robot for 10 minutes.
const THROTTLED_FOR: Duration = Duration::from_secs(600);

/// A DingTalk robot: its secret, if it signs, and how its messages are written.
pub struct DingTalk {
    secret: Option<Secret>,
    style: Style,
}

pub type DingTalkChannel = ChatChannel<DingTalk>;

impl ChatVendor for DingTalk {
    const KIND: &'static str = "dingtalk";
    const NAME: &'static str = "DingTalk";
    const PACE: &'static [Window] = PACE;
    const LIMIT: usize = LIMIT;

    fn new(cfg: &ChatConfig, _index: usize, style: Style) -> Result<DingTalk, ConfigError> {
        Ok(DingTalk {
            secret: cfg.secret.clone(),
            style,
        })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        let url = match &self.secret {
            Some(s) => signed_url(url, s.expose(), chrono::Utc::now().timestamp_millis()),
            None => url.clone(),
        };
        vec![(url, render(alerts, &self.style))]
    }

    fn size(&self, alerts: &[Alert]) -> usize {
        render(alerts, &self.style).len()
    }

    fn verdict(&self, answer: &Answer) -> Result<(), DeliveryError> {
        code_verdict(Self::NAME, answer, &CODES)
    }
}

const CODES: Codes = Codes {
    code: &["errcode"],
    message: &["errmsg"],
    classify,
};

/// `base64(HMAC-SHA256(key = secret, message = "{timestamp}\n{secret}"))`, the timestamp in
/// milliseconds: DingTalk's formula (key and message the other way round from Feishu's).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let message = format!("{timestamp_ms}\n{secret}");
    base64::engine::general_purpose::STANDARD
        .encode(hmac_raw(secret.as_bytes(), message.as_bytes()))
}

/// The robot's URL with `timestamp` and `sign` appended, the signature form-urlencoded
/// (`+` `/` `=` escaped) as DingTalk decodes it.
pub fn signed_url(base: &Url, secret: &str, timestamp_ms: i64) -> Url {
    let mut url = base.clone();
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &sign(secret, timestamp_ms));
    url
}

/// The request body: a markdown message whose text starts with the title as a heading.
pub fn render(alerts: &[Alert], style: &Style) -> Vec<u8> {
    let card = Card::new(alerts, style);
    // DingTalk's markdown needs a blank line between lines.
    let text = format!(
        "### {}\n\n{}",
        card.title,
        chat::body(&card, Markdown::Common { sep: "\n\n" })
    );
    serde_json::to_vec(&json!({
        "msgtype": "markdown",
        "markdown": {"title": card.title, "text": text},
    }))
    .expect("JSON values serialize")
}

/// 130101: throttled, wait out the 10 minutes; -1: DingTalk is busy, back off; anything else
/// (310000 signature/keyword/IP, 300001 bad token...) needs someone to fix the robot or us.
fn classify(code: i64) -> Retry {
    match code {
        130101 => Retry::After(Some(THROTTLED_FOR)),
        -1 => Retry::Backoff,
        _ => Retry::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::domain::{Severity, Status};
    use crate::notify::chat::tests::alert;

    fn vector() -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(include_str!(
            "../../crates/recwatch-rtc/tests/data/push-and-chat-signing.json"
        ))
        .unwrap();
        all["dingtalk_custom_robot"].clone()
    }

    /// `dingtalk_custom_robot` in shared/vectors/push-and-chat-signing.json: the base64 and
    /// the URL-encoded form as it goes into the query.
    #[test]
    fn sign_matches_the_vector() {
        let v = vector();
        let secret = v["secret"].as_str().unwrap();
        let ts = v["timestamp"].as_i64().unwrap();
        assert_eq!(sign(secret, ts), v["sign_base64"].as_str().unwrap());
        let base: Url = "https://oapi.dingtalk.com/robot/send?access_token=X"
            .parse()
            .unwrap();
        let url = signed_url(&base, secret, ts);
        assert_eq!(
            url.as_str(),
            format!(
                "https://oapi.dingtalk.com/robot/send?access_token=X&timestamp={ts}&sign={}",
                v["sign_urlencoded"].as_str().unwrap()
            )
        );
        // Feishu's formula on the same inputs is not DingTalk's.
        assert_ne!(super::super::feishu::sign(secret, ts), sign(secret, ts));
    }

    #[test]
    fn render_is_markdown_with_the_title() {
        let style = Style::new(Language::En, None, Some("alarm"));
        let body = render(&[alert(7, Status::Firing, Severity::Critical)], &style);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["msgtype"], "markdown");
        let title = v["markdown"]["title"].as_str().unwrap();
        let text = v["markdown"]["text"].as_str().unwrap();
        assert!(title.starts_with("🔴 [CRITICAL]"), "{title}");
        assert!(text.starts_with(&format!("### {title}\n\n")), "{text}");
        assert!(
            text.contains("**Stop reason**: INTERNAL_ERROR\n\n"),
            "{text}"
        );
        assert!(text.ends_with("\n\nalarm"), "the keyword: {text}");
    }

    #[test]
    fn codes_table() {
        let cases = [
            ("throttled", 130101, Retry::After(Some(THROTTLED_FOR))),
            ("sign, keyword, ip", 310000, Retry::Refused),
            ("bad token", 300001, Retry::Refused),
            ("busy", -1, Retry::Backoff),
        ];
        for (name, code, want) in cases {
            assert_eq!(classify(code), want, "{name}");
        }
    }
}
