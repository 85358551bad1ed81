//! Feishu / Lark custom bot: an interactive card (a coloured header: red, orange, blue, or
//! green when resolved), signed in the body when the bot has a secret.
//!
//! Feishu answers HTTP 200 with `{"code": ..., "msg": ...}`: a non-zero code is a failure
//! (19021 bad signature or clock, 19024 keyword missing, 19022 IP not allowed), 11232 is its
//! rate limit.

use super::chat::{self, Card, ChatChannel, ChatVendor, Markdown, Style, Tone};
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

/// A body is at most 20 KB; the signature's two fields take under 100 bytes of that.
pub const LIMIT: usize = 20 * 1024 - 256;

/// 5 messages a second and 100 a minute per bot.
const PACE: &[Window] = &[
    Window::new(5, Duration::from_secs(1)),
    Window::new(100, Duration::from_secs(60)),
];

/// A Feishu bot: its secret, if it signs, and how its messages are written.
pub struct Feishu {
    secret: Option<Secret>,
    style: Style,
}

pub type FeishuChannel = ChatChannel<Feishu>;

impl ChatVendor for Feishu {
    const KIND: &'static str = "feishu";
    const NAME: &'static str = "Feishu";
    const PACE: &'static [Window] = PACE;
    const LIMIT: usize = LIMIT;

    fn new(cfg: &ChatConfig, _index: usize, style: Style) -> Result<Feishu, ConfigError> {
        Ok(Feishu {
            secret: cfg.secret.clone(),
            style,
        })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        let signed = self.secret.as_ref().map(|s| {
            let ts = chrono::Utc::now().timestamp();
            (ts, sign(s.expose(), ts))
        });
        vec![(url.clone(), render(alerts, &self.style, signed))]
    }

    fn size(&self, alerts: &[Alert]) -> usize {
        render(alerts, &self.style, None).len()
    }

    fn verdict(&self, answer: &Answer) -> Result<(), DeliveryError> {
        code_verdict(Self::NAME, answer, &CODES)
    }
}

/// Feishu's verdict is `code` (`StatusCode` in older answers) and `msg`.
const CODES: Codes = Codes {
    code: &["code", "StatusCode"],
    message: &["msg", "StatusMessage"],
    classify,
};

/// `sign = base64(HMAC-SHA256(key = "{timestamp}\n{secret}", message = empty))`, the
/// timestamp in seconds: Feishu's formula (the key is the string to sign, the message empty).
pub fn sign(secret: &str, timestamp: i64) -> String {
    let key = format!("{timestamp}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac_raw(key.as_bytes(), b""))
}

/// The request body: an interactive card; with `signed` = (timestamp, sign), both in the body
/// as Feishu verifies them (the timestamp as a string).
pub fn render(alerts: &[Alert], style: &Style, signed: Option<(i64, String)>) -> Vec<u8> {
    let card = Card::new(alerts, style);
    let template = match card.tone {
        Tone::Critical => "red",
        Tone::Warning => "orange",
        Tone::Info => "blue",
        Tone::Resolved => "green",
    };
    let mut v = json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "template": template,
                "title": {"tag": "plain_text", "content": card.title},
            },
            "elements": [{
                "tag": "div",
                "text": {"tag": "lark_md", "content": chat::body(&card, Markdown::Common { sep: "\n" })},
            }],
        },
    });
    if let Some((ts, sign)) = signed {
        v["timestamp"] = json!(ts.to_string());
        v["sign"] = json!(sign);
    }
    serde_json::to_vec(&v).expect("JSON values serialize")
}

/// 11232 is the rate limit: wait out its minute. Every other code (bad signature, keyword
/// missing, IP not allowed, bad request) needs someone to fix the bot or our config.
fn classify(code: i64) -> Retry {
    match code {
        11232 => Retry::After(Some(Duration::from_secs(60))),
        _ => Retry::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::domain::{Severity, Status};
    use crate::notify::chat::tests::alert;

    /// `feishu_custom_bot` in shared/vectors/push-and-chat-signing.json.
    #[test]
    fn sign_matches_the_vector() {
        let all: serde_json::Value = serde_json::from_str(include_str!(
            "../../crates/recwatch-rtc/tests/data/push-and-chat-signing.json"
        ))
        .unwrap();
        let v = &all["feishu_custom_bot"];
        assert_eq!(
            sign(
                v["secret"].as_str().unwrap(),
                v["timestamp"].as_i64().unwrap()
            ),
            v["sign"].as_str().unwrap()
        );
        // The other formula (DingTalk's) gives something else: they cannot be swapped.
        assert_ne!(
            super::super::dingtalk::sign(
                v["secret"].as_str().unwrap(),
                v["timestamp"].as_i64().unwrap()
            ),
            v["sign"].as_str().unwrap()
        );
    }

    #[test]
    fn render_is_a_signed_card() {
        let style = Style::new(Language::ZhCn, None, Some("recwatch"));
        let body = render(
            &[alert(1, Status::Resolved, Severity::Critical)],
            &style,
            Some((1599360473, "abc=".into())),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["msg_type"], "interactive");
        assert_eq!(v["timestamp"], "1599360473");
        assert_eq!(v["sign"], "abc=");
        assert_eq!(v["card"]["header"]["template"], "green");
        let title = v["card"]["header"]["title"]["content"].as_str().unwrap();
        assert!(title.contains("【已恢复】"), "{title}");
        let text = v["card"]["elements"][0]["text"]["content"]
            .as_str()
            .unwrap();
        assert!(text.contains("recwatch"), "the keyword: {text}");
        let unsigned = render(&[alert(1, Status::Firing, Severity::Warning)], &style, None);
        let v: serde_json::Value = serde_json::from_slice(&unsigned).unwrap();
        assert!(v.get("sign").is_none() && v.get("timestamp").is_none());
        assert_eq!(v["card"]["header"]["template"], "orange");
    }

    #[test]
    fn codes_table() {
        let cases = [
            (
                "rate limited",
                11232,
                Retry::After(Some(Duration::from_secs(60))),
            ),
            ("bad signature", 19021, Retry::Refused),
            ("keyword missing", 19024, Retry::Refused),
            ("ip not allowed", 19022, Retry::Refused),
            ("bad request", 9499, Retry::Refused),
        ];
        for (name, code, want) in cases {
            assert_eq!(classify(code), want, "{name}");
        }
    }
}
