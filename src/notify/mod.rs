//! Notification channels: render one alert for one channel and hand it over once.
//!
//! A channel is built once from its config (its HTTP client or SMTP pool lives as long as the
//! channel) and knows nothing of retries: `send` either returns `Ok` because the receiver
//! accepted the alert, or a [`DeliveryError`] that says whether trying again can help. The
//! durable outbox above decides when to try again; rendering is pure so it is tested without
//! a network.

pub mod email;
pub mod webhook;

use crate::config::{ConfigError, NotifyConfig};
use crate::domain::Alert;
use crate::secret::Secret;
use futures_util::future::BoxFuture;
use std::fmt;

/// What every channel is: a name for `notify = [...]` lists and output, a kind, and one way to
/// hand an alert over. A new channel is a file here implementing this, and a line in
/// [`Channel::from_config`]; the outbox and the delivery lanes never see what kind it is.
pub trait Notifier: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Delivers `alert` once. `Ok` only when the receiver accepted it.
    fn send<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// One configured destination.
pub struct Channel(Box<dyn Notifier>);

impl Channel {
    /// Every configured channel, webhooks first, each with its client built.
    pub fn from_config(cfg: &NotifyConfig) -> Result<Vec<Channel>, ConfigError> {
        let mut channels = Vec::with_capacity(cfg.webhooks.len() + cfg.emails.len());
        for (i, w) in cfg.webhooks.iter().enumerate() {
            channels.push(Channel(Box::new(webhook::WebhookChannel::new(w, i)?)));
        }
        for (i, e) in cfg.emails.iter().enumerate() {
            channels.push(Channel(Box::new(email::EmailChannel::new(e, i)?)));
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
        self.0.send(alert).await
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
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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
