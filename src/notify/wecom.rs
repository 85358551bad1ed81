//! WeCom (企业微信) group robot: a markdown message to `.../webhook/send?key=KEY`. The key in
//! the URL is the credential; there is no signing.
//!
//! WeCom answers HTTP 200 with `{"errcode": ..., "errmsg": ...}`: 45009 is its rate limit (20
//! messages a minute), 93000 a bad key, 40058 a message over 4,096 bytes.

use super::chat::{self, Card, ChatChannel, ChatVendor, Markdown, Style, Tone};
use super::http::{Answer, Codes, code_verdict};
use super::{DeliveryError, Retry, Window};
use crate::config::{ChatConfig, ConfigError};
use crate::domain::Alert;
use serde_json::json;
use std::time::Duration;
use url::Url;

/// The markdown content is at most 4,096 bytes of UTF-8.
pub const LIMIT: usize = 4096;

/// 20 messages a minute per robot, with two seconds' margin for network delays.
const PACE: &[Window] = &[Window::new(20, Duration::from_secs(62))];

/// A WeCom robot: the key is in its URL, so only the style is its own.
pub struct WeCom {
    style: Style,
}

pub type WeComChannel = ChatChannel<WeCom>;

impl ChatVendor for WeCom {
    const KIND: &'static str = "wecom";
    const NAME: &'static str = "WeCom";
    const PACE: &'static [Window] = PACE;
    const LIMIT: usize = LIMIT;

    fn new(_cfg: &ChatConfig, _index: usize, style: Style) -> Result<WeCom, ConfigError> {
        Ok(WeCom { style })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        let body = serde_json::to_vec(&json!({
            "msgtype": "markdown",
            "markdown": {"content": content(alerts, &self.style)},
        }))
        .expect("JSON values serialize");
        vec![(url.clone(), body)]
    }

    /// The limit is on the markdown content, not the whole body.
    fn size(&self, alerts: &[Alert]) -> usize {
        content(alerts, &self.style).len()
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

/// The markdown content: the title in WeCom's colours (`warning` is orange, `info` green,
/// `comment` grey), then the body.
pub fn content(alerts: &[Alert], style: &Style) -> String {
    let card = Card::new(alerts, style);
    let colour = match card.tone {
        Tone::Critical | Tone::Warning => "warning",
        Tone::Info => "comment",
        Tone::Resolved => "info",
    };
    format!(
        "<font color=\"{colour}\">**{}**</font>\n{}",
        card.title,
        chat::body(&card, Markdown::Common { sep: "\n" })
    )
}

/// 45009: over the minute's 20, wait it out; -1: busy, back off; anything else (93000 bad
/// key, 40058 too long...) needs a fix.
fn classify(code: i64) -> Retry {
    match code {
        45009 => Retry::After(Some(Duration::from_secs(60))),
        -1 => Retry::Backoff,
        _ => Retry::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::domain::{Severity, Status};
    use crate::notify::Notifier;
    use crate::notify::chat::tests::alert;

    #[test]
    fn content_is_coloured_markdown() {
        let style = Style::new(Language::ZhCn, None, None);
        let c = content(&[alert(1, Status::Resolved, Severity::Warning)], &style);
        assert!(c.starts_with("<font color=\"info\">**✅ 【已恢复】"), "{c}");
        assert!(c.contains("**任务**: cam-1 (job-0001)"), "{c}");
        let c = content(&[alert(1, Status::Firing, Severity::Critical)], &style);
        assert!(c.starts_with("<font color=\"warning\">"), "{c}");
    }

    /// A storm of 200 Chinese-language alerts splits into messages each within 4,096 bytes,
    /// every alert in exactly one of them, in order.
    #[test]
    fn a_storm_splits_at_4096_bytes() {
        let cfg = crate::config::ChatConfig {
            kind: crate::config::ChatKind::WeCom,
            name: "w".into(),
            url: crate::config::SecretUrl::new(
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
                    .parse()
                    .unwrap(),
            ),
            secret: None,
            routing_key: None,
            keyword: None,
            timeout: Duration::from_secs(5),
        };
        let style = Style::new(
            Language::ZhCn,
            Some(&"https://rw.example.com".parse().unwrap()),
            None,
        );
        let ch = WeComChannel::new(&cfg, 0, style.clone()).unwrap();
        let alerts: Vec<_> = (0..200)
            .map(|i| alert(i, Status::Firing, Severity::Critical))
            .collect();
        let sizes = ch.split(&alerts);
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.len() > 1, "{sizes:?}");
        let mut start = 0;
        for n in sizes {
            let c = content(&alerts[start..start + n], &style);
            assert!(c.len() <= LIMIT, "{} bytes", c.len());
            for a in &alerts[start..start + n] {
                assert!(c.contains(&a.job.as_ref().unwrap().job_id));
            }
            start += n;
        }
    }

    #[test]
    fn codes_table() {
        let cases = [
            (
                "frequency limit",
                45009,
                Retry::After(Some(Duration::from_secs(60))),
            ),
            ("bad key", 93000, Retry::Refused),
            ("too long", 40058, Retry::Refused),
            ("busy", -1, Retry::Backoff),
        ];
        for (name, code, want) in cases {
            assert_eq!(classify(code), want, "{name}");
        }
    }
}
