//! Microsoft Teams through a Workflows webhook ("post to a channel when a webhook request is
//! received"): an Adaptive Card whose title is coloured (Attention, Warning, Accent; Good
//! when resolved), with a button to the job's page. The old Office 365 connectors are
//! retired.
//!
//! A workflow answers 202 (it runs later) or 200; anything else is read as HTTP statuses are.

use super::Window;
use super::chat::{self, Card, ChatChannel, ChatVendor, Markdown, Style, Tone};
use crate::config::{ChatConfig, ConfigError};
use crate::domain::Alert;
use serde_json::json;
use std::time::Duration;
use url::Url;

/// A Teams message is at most 28 KB.
pub const LIMIT: usize = 27 * 1024;

/// Teams' webhooks take about 4 requests a second.
const PACE: &[Window] = &[Window::new(4, Duration::from_secs(1))];

/// A Teams workflow: only the style is its own (the URL is the credential).
pub struct Teams {
    style: Style,
}

pub type TeamsChannel = ChatChannel<Teams>;

impl ChatVendor for Teams {
    const KIND: &'static str = "teams";
    const NAME: &'static str = "Teams";
    const PACE: &'static [Window] = PACE;
    const LIMIT: usize = LIMIT;

    fn new(_cfg: &ChatConfig, _index: usize, style: Style) -> Result<Teams, ConfigError> {
        Ok(Teams { style })
    }

    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)> {
        vec![(url.clone(), render(alerts, &self.style))]
    }

    fn size(&self, alerts: &[Alert]) -> usize {
        render(alerts, &self.style).len()
    }
}

/// The request body: a message with one Adaptive Card attachment.
pub fn render(alerts: &[Alert], style: &Style) -> Vec<u8> {
    let card = Card::new(alerts, style);
    let colour = match card.tone {
        Tone::Critical => "Attention",
        Tone::Warning => "Warning",
        Tone::Info => "Accent",
        Tone::Resolved => "Good",
    };
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": card.title, "weight": "Bolder", "size": "Medium", "color": colour, "wrap": true},
            // Adaptive Cards' markdown needs a blank line between list items and lines.
            {"type": "TextBlock", "text": chat::body(&card, Markdown::Common { sep: "\n\n" }), "wrap": true},
        ],
    });
    if let Some((text, url)) = &card.link {
        content["actions"] = json!([{"type": "Action.OpenUrl", "title": text, "url": url}]);
    }
    serde_json::to_vec(&json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    }))
    .expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Language;
    use crate::domain::{Severity, Status};
    use crate::notify::chat::tests::alert;

    #[test]
    fn render_is_an_adaptive_card() {
        let style = Style::new(
            Language::En,
            Some(&"https://rw.example.com".parse().unwrap()),
            None,
        );
        let body = render(&[alert(4, Status::Resolved, Severity::Critical)], &style);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["body"][0]["color"], "Good");
        assert!(
            a["content"]["body"][0]["text"]
                .as_str()
                .unwrap()
                .contains("[RESOLVED]")
        );
        assert_eq!(
            a["content"]["actions"][0]["url"],
            "https://rw.example.com/jobs/app-1/job-0004"
        );
    }
}
