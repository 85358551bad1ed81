//! Slack incoming webhook: a header block (the title) and a mrkdwn section (the body), with
//! the title as the notification's fallback text.
//!
//! Slack answers `200 ok`, or a status with a plain-text reason (`invalid_payload`,
//! `channel_not_found`, 410 `channel_is_archived`), or 429 with `Retry-After`.

use super::Window;
use super::chat::{self, Card, ChatChannel, ChatVendor, Markdown, Style};
use crate::config::{ChatConfig, ConfigError};
use crate::domain::Alert;
use serde_json::json;
use std::time::Duration;
use url::Url;

/// A section's text is at most 3,000 characters: a longer body is several sections.
pub const SECTION_CHARS: usize = 3000;
/// A message's text is at most 40,000 characters (and 50 blocks): a group's body stays under
/// this, leaving room for the header and the cut between sections.
pub const LIMIT: usize = 36_000;
/// A header's text is at most 150 characters.
const HEADER_CHARS: usize = 150;

/// About one message a second per webhook.
const PACE: &[Window] = &[Window::new(1, Duration::from_secs(1))];

/// When a 429 does not say how long: Slack's limit is per minute at most.
const THROTTLE_WINDOW: Duration = Duration::from_secs(30);

/// A Slack incoming webhook: only the style is its own (the URL is the credential).
pub struct Slack {
    style: Style,
}

pub type SlackChannel = ChatChannel<Slack>;

impl ChatVendor for Slack {
    const KIND: &'static str = "slack";
    const NAME: &'static str = "Slack";
    const PACE: &'static [Window] = PACE;
    const LIMIT: usize = LIMIT;
    const THROTTLED: Duration = THROTTLE_WINDOW;

    fn new(_cfg: &ChatConfig, _index: usize, style: Style) -> Result<Slack, ConfigError> {
        Ok(Slack { style })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        vec![(url.clone(), render(alerts, &self.style))]
    }

    /// The limit is on the text, in characters.
    fn size(&self, alerts: &[Alert]) -> usize {
        section(alerts, &self.style).1.chars().count()
    }
}

fn section(alerts: &[Alert], style: &Style) -> (Card, String) {
    let card = Card::new(alerts, style);
    let text = chat::body(&card, Markdown::Slack);
    (card, text)
}

/// `text` cut at line ends into pieces of at most [`SECTION_CHARS`] (a longer line is cut).
pub fn sections(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_chars = 0;
    for line in text.split('\n') {
        let line: String = line.chars().take(SECTION_CHARS).collect();
        let n = line.chars().count();
        if cur_chars > 0 && cur_chars + 1 + n > SECTION_CHARS {
            out.push(std::mem::take(&mut cur));
            cur_chars = 0;
        }
        if cur_chars > 0 {
            cur.push('\n');
            cur_chars += 1;
        }
        cur.push_str(&line);
        cur_chars += n;
    }
    if cur_chars > 0 || out.is_empty() {
        out.push(cur);
    }
    out
}

/// The request body: a header block, then the body in as many mrkdwn sections as it needs.
pub fn render(alerts: &[Alert], style: &Style) -> Vec<u8> {
    let (card, text) = section(alerts, style);
    let header: String = card.title.chars().take(HEADER_CHARS).collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
    ];
    blocks.extend(
        sections(&text)
            .into_iter()
            .map(|t| json!({"type": "section", "text": {"type": "mrkdwn", "text": t}})),
    );
    serde_json::to_vec(&json!({"text": card.title, "blocks": blocks}))
        .expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::domain::{Severity, Status};
    use crate::notify::chat::tests::alert;

    #[test]
    fn sections_table() {
        let long = "x".repeat(SECTION_CHARS + 10);
        let line = "y".repeat(2000);
        let cases: Vec<(&str, String, Vec<usize>)> = vec![
            ("short", "a\nb".into(), vec![3]),
            ("empty", String::new(), vec![0]),
            (
                "two lines over the limit",
                format!("{line}\n{line}"),
                vec![2000, 2000],
            ),
            ("a line over the limit is cut", long, vec![SECTION_CHARS]),
        ];
        for (name, text, want) in cases {
            let got: Vec<usize> = sections(&text).iter().map(|s| s.chars().count()).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn render_has_header_and_mrkdwn() {
        let style = Style::new(
            Language::En,
            Some(&"https://rw.example.com".parse().unwrap()),
            None,
        );
        let body = render(&[alert(3, Status::Firing, Severity::Warning)], &style);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["blocks"][0]["type"], "header");
        assert!(v["text"].as_str().unwrap().starts_with("🟠 [WARNING]"));
        let text = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(v["blocks"][1]["text"]["type"], "mrkdwn");
        assert!(text.contains("*Job*: cam-3 (job-0003)"), "{text}");
        assert!(
            text.contains("<https://rw.example.com/jobs/app-1/job-0003|"),
            "{text}"
        );
    }
}
