//! Notification channels: render one alert for one channel and hand it over once.
//!
//! A channel is built once from its config (its HTTP client or SMTP pool lives as long as the
//! channel) and knows nothing of retries: `send` either returns `Ok` because the receiver
//! accepted the alert, or a [`DeliveryError`] that says whether trying again can help. The
//! durable outbox above decides when to try again; rendering is pure so it is tested without
//! a network.

pub mod chat;
pub mod dingtalk;
pub mod email;
pub mod feishu;
pub mod http;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod webhook;
pub mod wecom;

use crate::config::{ChatKind, ConfigError, NotifyConfig};
use crate::domain::Alert;
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use std::fmt;
use std::time::Duration;

/// What every channel is: a name for `notify = [...]` lists and output, a kind, and one way to
/// hand an alert over. A new channel is a file here implementing this, and a line in
/// [`Channel::from_config`]; the outbox and the delivery lanes never see what kind it is.
pub trait Notifier: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Delivers `alerts` once, as one message when the channel [`groups`](Notifier::groups)
    /// (else one event each, in order). `Ok` only when the receiver accepted all of it. One
    /// alert is a group of one.
    fn send<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// Whether alerts due together may go out as one message: true where people read them
    /// (chat, e-mail), false where machines consume them (webhooks, PagerDuty).
    fn groups(&self) -> bool {
        false
    }
    /// How many of `alerts` (in order) go into each message: only the vendor's size limit
    /// splits a group. Pure. Channels that do not group send one each.
    fn split(&self, alerts: &[Alert]) -> Vec<usize> {
        vec![1; alerts.len()]
    }
    /// The vendor's pace: at most so many messages in each window. Empty: no limit of ours.
    fn pace(&self) -> &'static [Window] {
        &[]
    }
}

/// At most `messages` in any `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub messages: u32,
    pub per: Duration,
}

impl Window {
    pub const fn new(messages: u32, per: Duration) -> Window {
        Window { messages, per }
    }
}

/// One configured destination.
pub struct Channel(Box<dyn Notifier>);

impl Channel {
    /// Every configured channel, webhooks first, each with its client built; chat messages
    /// without links to job pages (see [`Channel::with_links`]).
    pub fn from_config(cfg: &NotifyConfig) -> Result<Vec<Channel>, ConfigError> {
        Channel::with_links(cfg, None)
    }

    /// Every channel of `config`, as the daemon sends through them: chat messages link to
    /// `{public_url}/jobs/{app}/{job}` and, when several accounts are configured, name each
    /// alert's account.
    pub fn of_config(config: &crate::config::Config) -> Result<Vec<Channel>, ConfigError> {
        Channel::build(
            &config.notify,
            config.http.public_url.as_ref(),
            config.several_accounts(),
        )
    }

    /// Every configured channel; chat messages link to `{public_url}/jobs/{app}/{job}`.
    pub fn with_links(
        cfg: &NotifyConfig,
        public_url: Option<&url::Url>,
    ) -> Result<Vec<Channel>, ConfigError> {
        Channel::build(cfg, public_url, false)
    }

    fn build(
        cfg: &NotifyConfig,
        public_url: Option<&url::Url>,
        several_accounts: bool,
    ) -> Result<Vec<Channel>, ConfigError> {
        let mut channels = Vec::with_capacity(cfg.channel_names().len());
        for (i, w) in cfg.webhooks.iter().enumerate() {
            channels.push(Channel(Box::new(webhook::WebhookChannel::new(w, i)?)));
        }
        for (i, e) in cfg.emails.iter().enumerate() {
            channels.push(Channel(Box::new(email::EmailChannel::new(e, i)?)));
        }
        // The index in each kind's own list, for error locations.
        let mut index: std::collections::HashMap<ChatKind, usize> = Default::default();
        for c in &cfg.chats {
            let i = index.entry(c.kind).or_default();
            let style = chat::Style::new(cfg.language, public_url, c.keyword.as_deref())
                .naming_accounts(several_accounts);
            let n: Box<dyn Notifier> = match c.kind {
                ChatKind::Feishu => Box::new(feishu::FeishuChannel::new(c, *i, style)?),
                ChatKind::DingTalk => Box::new(dingtalk::DingTalkChannel::new(c, *i, style)?),
                ChatKind::WeCom => Box::new(wecom::WeComChannel::new(c, *i, style)?),
                ChatKind::Slack => Box::new(slack::SlackChannel::new(c, *i, style)?),
                ChatKind::Teams => Box::new(teams::TeamsChannel::new(c, *i, style)?),
                ChatKind::PagerDuty => Box::new(pagerduty::PagerDutyChannel::new(c, *i, style)?),
            };
            *i += 1;
            channels.push(Channel(n));
        }
        Ok(channels)
    }

    pub fn name(&self) -> &str {
        self.0.name()
    }

    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// Delivers `alert` once. `Ok` only when the receiver accepted it.
    pub async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        self.0.send(std::slice::from_ref(alert)).await
    }

    /// Delivers `alerts` once, as one message if the channel groups. `Ok` only when the
    /// receiver accepted it.
    pub async fn send_all(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        self.0.send(alerts).await
    }

    /// See [`Notifier::groups`].
    pub fn groups(&self) -> bool {
        self.0.groups()
    }

    /// See [`Notifier::split`].
    pub fn split(&self, alerts: &[Alert]) -> Vec<usize> {
        self.0.split(alerts)
    }

    /// See [`Notifier::pace`].
    pub fn pace(&self) -> &'static [Window] {
        self.0.pace()
    }
}

impl fmt::Debug for Channel {
    // Only the name and kind: the rest holds keys, header values and passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("kind", &self.kind())
            .field("name", &self.name())
            .finish()
    }
}

/// Why a delivery did not happen. `message` is for operators: the exact cause (HTTP status and
/// a snippet of the answer, SMTP code and text, connect error, timeout) and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// What the answer says about trying again; the delivery worker turns it into a delay.
    pub retry: Retry,
    pub message: String,
}

/// How a failed delivery may be tried again. Channels only classify; the pace and the end
/// (`notify.max_age`) are the delivery worker's (`deliver::after_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The receiver may be back soon (5xx, 408, a timeout, a refused connection, an SMTP 4xx):
    /// exponential back-off.
    Backoff,
    /// The receiver refused (3xx, 4xx other than 408/429, an SMTP 5xx, a failed login). Someone
    /// has to change the receiver or our config, and a receiver misconfigured for ten minutes
    /// must not lose the alert: tried again at a slow pace (every `notify.max_backoff`).
    Refused,
    /// Throttled (429): not before this long, as the receiver's `Retry-After` asked
    /// (capped at `notify.max_backoff`); `None` when it gave no usable value.
    After(Option<std::time::Duration>),
    /// No answer could ever change the outcome (the stored alert cannot be read): dead at once.
    Never,
}

impl DeliveryError {
    /// A failure that may pass by itself: retried with exponential back-off.
    pub fn transient(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retry: Retry::Backoff,
            message: message.into(),
        }
    }

    /// A refusal that needs someone to act: retried slowly until `notify.max_age`.
    pub fn refused(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retry: Retry::Refused,
            message: message.into(),
        }
    }

    /// Trying again cannot help at all.
    pub fn never(message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retry: Retry::Never,
            message: message.into(),
        }
    }

    /// True for answers that need someone to change something before a retry can succeed.
    pub fn needs_a_fix(&self) -> bool {
        matches!(self.retry, Retry::Refused | Retry::Never)
    }
}

/// Replaces every occurrence of each secret in `text` with `***`: a receiver that echoes our
/// request back must not put a credential into an error that ends up in logs and the database.
fn redact(text: &str, secrets: &[Secret]) -> String {
    crate::secret::Redactor::new(secrets).redact(text)
}

/// The first `max` characters of `text` on one line, control characters replaced, so an
/// answer's body fits in a log line and a database column.
fn snippet(text: &str, max: usize) -> String {
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// An error and its causes, outermost first, joined as `a: b: c` (repeats dropped: many
/// errors print their source in their own message too).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_occurrence() {
        let secrets = [Secret::new("tok-123"), Secret::new("x")];
        assert_eq!(redact("a tok-123 b tok-123 x", &secrets), "a *** b *** x");
    }

    #[test]
    fn snippet_is_one_short_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("short", "not found", 20, "not found"),
            (
                "newlines folded",
                "line one\r\n  line\ttwo\n",
                50,
                "line one line two",
            ),
            ("cut at a char boundary", "ééééé", 3, "ééé…"),
            ("empty", "", 10, ""),
        ];
        for (name, input, max, want) in cases {
            assert_eq!(snippet(input, *max), *want, "{name}");
        }
    }

    #[test]
    fn delivery_error_displays_its_message() {
        let e = DeliveryError::transient("HTTP 503");
        assert_eq!(e.to_string(), "HTTP 503");
        assert_eq!(e.retry, Retry::Backoff);
        assert!(!e.needs_a_fix());
        assert!(DeliveryError::refused("x").needs_a_fix());
        assert!(DeliveryError::never("x").needs_a_fix());
    }
}
