//! The `[notify]` section: its retry settings and every channel (`[[notify.webhook]]`,
//! `[[notify.email]]`), each checked here so a channel is built from values that parse.

use super::chat::{read_chats, read_language};
use super::defaults::{self, MAX_GROUP_WAIT, MAX_MAX_AGE, MAX_MAX_BACKOFF};
use super::raw::Table;
use super::validate::{check_channel_timeout, check_range, parse_http_url, quoted};
use super::{ConfigError, EmailConfig, NotifyConfig, Tls, WebhookConfig};
use crate::secret::Secret;
use lettre::message::Mailbox;
use reqwest::header::{HeaderName, HeaderValue};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

pub(super) fn read_notify(mut t: Table, base: Option<&Path>) -> Result<NotifyConfig, ConfigError> {
    let max_age = t.duration("max_age")?.unwrap_or(defaults::MAX_AGE);
    check_range(
        &t,
        "max_age",
        max_age,
        MAX_MAX_AGE,
        "an alert older than that is history, not news",
        &quoted(defaults::MAX_AGE),
    )?;
    let max_backoff = t.duration("max_backoff")?.unwrap_or(defaults::MAX_BACKOFF);
    check_range(
        &t,
        "max_backoff",
        max_backoff,
        MAX_MAX_BACKOFF,
        "a refused delivery is tried again only this often, so a fixed receiver would wait that long",
        &quoted(defaults::MAX_BACKOFF),
    )?;
    // Channel names are one namespace across kinds: a job's `notify` list names them.
    let mut names = HashSet::new();
    let mut webhooks = Vec::new();
    for w in t.array_of_tables("webhook")? {
        webhooks.push(read_webhook(w, base, &mut names)?);
    }
    let mut emails = Vec::new();
    for e in t.array_of_tables("email")? {
        emails.push(read_email(e, base, &mut names)?);
    }
    let chats = read_chats(&mut t, base, &mut names)?;
    let language = read_language(&mut t)?;
    let group_wait = t.duration("group_wait")?.unwrap_or(defaults::GROUP_WAIT);
    // Zero is allowed here: it turns grouping off.
    if group_wait > MAX_GROUP_WAIT {
        return Err(t.err(
            "group_wait",
            format!(
                "{} is longer than {} (every alert after the first of a storm waits that long); use e.g. {}, or \"0s\" to send each alert at once",
                super::format_duration(group_wait),
                super::format_duration(MAX_GROUP_WAIT),
                quoted(defaults::GROUP_WAIT)
            ),
        ));
    }
    t.finish()?;
    Ok(NotifyConfig {
        webhooks,
        emails,
        chats,
        language,
        group_wait,
        max_age,
        max_backoff,
    })
}

/// A channel's `name`, which must not be taken by another channel of either kind.
pub(super) fn channel_name(
    t: &mut Table,
    names: &mut HashSet<String>,
) -> Result<String, ConfigError> {
    let name = t.required_string("name")?;
    if !names.insert(name.clone()) {
        return Err(t.err(
            "name",
            format!("channel name {name:?} is used twice; names must be unique"),
        ));
    }
    Ok(name)
}

fn read_webhook(
    mut w: Table,
    base: Option<&Path>,
    names: &mut HashSet<String>,
) -> Result<WebhookConfig, ConfigError> {
    w.known(&["name", "url", "secret", "secret_file", "headers", "timeout"])?;
    let name = channel_name(&mut w, names)?;
    let url_text = w.required_string("url")?;
    let url = parse_http_url(&url_text).map_err(|m| w.err("url", m))?;
    let secret = match w.secret("secret", base)? {
        Some(s) => Some(WebhookSecret::parse(s).map_err(|m| w.err("secret", m))?),
        None => None,
    };
    let headers = match w.table_opt("headers")? {
        Some(h) => read_headers(h)?,
        None => Vec::new(),
    };
    let timeout = w.duration("timeout")?.unwrap_or(defaults::WEBHOOK_TIMEOUT);
    check_channel_timeout(&w, timeout)?;
    w.finish()?;
    Ok(WebhookConfig {
        name,
        url,
        secret,
        headers,
        timeout,
    })
}

/// `headers`: each name valid and not one recwatch sets, each value a valid header value.
/// A value may be a credential: no message shows it.
fn read_headers(mut h: Table) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut headers = Vec::new();
    for key in h.keys() {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return Err(h.err(&key, "is not a valid HTTP header name"));
        };
        let value = h.required_string(&key)?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(h.err(
                &key,
                "is set by recwatch itself; remove it from the headers table",
            ));
        }
        let Ok(mut value) = HeaderValue::from_str(&value) else {
            return Err(h.err(
                &key,
                "is not a valid header value (control characters or non-ASCII); check the value",
            ));
        };
        value.set_sensitive(true);
        headers.push((name, value));
    }
    Ok(headers)
}

fn read_email(
    mut e: Table,
    base: Option<&Path>,
    names: &mut HashSet<String>,
) -> Result<EmailConfig, ConfigError> {
    e.known(&[
        "name",
        "smtp_host",
        "smtp_port",
        "tls",
        "username",
        "password",
        "password_file",
        "from",
        "to",
        "timeout",
        "accept_invalid_certs",
    ])?;
    let name = channel_name(&mut e, names)?;
    let smtp_host = e.required_string("smtp_host")?;
    let (tls, smtp_port) = read_tls_and_port(&mut e)?;
    let username = e.nonempty_string("username")?;
    let password = e.secret("password", base)?;
    if password.is_some() && username.is_none() {
        return Err(e.err(
            "username",
            "missing: a password is set, so set the username too",
        ));
    }
    let (from, to) = read_addresses(&mut e)?;
    let timeout = e.duration("timeout")?.unwrap_or(defaults::EMAIL_TIMEOUT);
    check_channel_timeout(&e, timeout)?;
    let accept_invalid_certs = e.boolean("accept_invalid_certs")?.unwrap_or(false);
    e.finish()?;
    Ok(EmailConfig {
        name,
        smtp_host,
        smtp_port,
        tls,
        username,
        password,
        from,
        to,
        timeout,
        accept_invalid_certs,
    })
}

/// `tls` and `smtp_port`, whose default depends on the mode.
fn read_tls_and_port(e: &mut Table) -> Result<(Tls, u16), ConfigError> {
    let tls = match e.string("tls")?.as_deref() {
        None | Some("starttls") => Tls::StartTls,
        Some("tls") => Tls::Tls,
        Some("none") => Tls::None,
        Some(other) => {
            return Err(e.err(
                "tls",
                format!("{other:?} is not a mode; use \"starttls\", \"tls\" or \"none\""),
            ));
        }
    };
    let default_port = match tls {
        Tls::StartTls => defaults::SMTP_PORT_STARTTLS,
        Tls::Tls => defaults::SMTP_PORT_TLS,
        Tls::None => defaults::SMTP_PORT_NONE,
    };
    let smtp_port = match e.integer("smtp_port")? {
        None => default_port,
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => return Err(e.err("smtp_port", format!("{p} is not a port"))),
    };
    Ok((tls, smtp_port))
}

/// `from` and `to`: each an address lettre can send to.
fn read_addresses(e: &mut Table) -> Result<(Mailbox, Vec<Mailbox>), ConfigError> {
    let from_text = e.required_string("from")?;
    let from = from_text
        .parse::<Mailbox>()
        .map_err(|err| e.err("from", format!("{from_text:?} is not an address: {err}")))?;
    let to_text = e.string_list("to")?.unwrap_or_default();
    if to_text.is_empty() {
        return Err(e.err(
            "to",
            "missing: list at least one recipient, e.g. [\"oncall@example.com\"]",
        ));
    }
    let to = to_text
        .iter()
        .map(|addr| {
            addr.parse::<Mailbox>()
                .map_err(|err| e.err("to", format!("{addr:?} is not an address: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((from, to))
}

/// The headers the webhook channel sets itself (`notify::webhook`'s `HEADER_*` and
/// Content-Type), in lower case as [`HeaderName`] keeps them: a configured one would clash.
pub const RESERVED_HEADERS: [&str; 4] = [
    "content-type",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// A Standard Webhooks signing secret, decoded once: the text as written (to scrub from
/// error messages) and the HMAC key. Debug shows neither.
#[derive(Clone)]
pub struct WebhookSecret {
    text: Secret,
    key: Vec<u8>,
}

impl WebhookSecret {
    /// The error is the message for the `secret` key.
    pub fn parse(text: Secret) -> Result<WebhookSecret, String> {
        let key = decode_webhook_secret(text.expose())?;
        Ok(WebhookSecret { text, key })
    }

    /// The HMAC key: the base64 after `whsec_`, decoded.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The secret as written.
    pub fn text(&self) -> &Secret {
        &self.text
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// Standard Webhooks keys are base64, conventionally prefixed `whsec_`; the HMAC key is the
/// decoded bytes, so a receiver's library and we agree on it.
pub fn decode_webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
        "is not a Standard Webhooks secret: use \"whsec_\" followed by base64, e.g. the output of `openssl rand -base64 32` with whsec_ in front".to_string()
    })?;
    if key.len() < 16 {
        return Err("is too short: use at least 16 random bytes (24 base64 characters)".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook_with(headers: &str) -> Result<super::super::Config, ConfigError> {
        let text = format!(
            "[api.auth]\ntoken = \"t\"\n[[notify.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/\"\nheaders = {headers}\n"
        );
        super::super::parse_str(&text, Vec::<(String, String)>::new(), None)
    }

    #[test]
    fn bad_header_values_are_refused_without_showing_them() {
        // (Trimmed at load, so the bad part sits inside the value.)
        let e = webhook_with("{ Authorization = \"Bearer s3cr3t\\r\\nX-Evil: 1\" }")
            .expect_err("refused");
        assert!(e.location.contains("headers.Authorization"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");

        let e = webhook_with("{ webhook-signature = \"x\" }").expect_err("refused");
        assert!(e.message.contains("set by recwatch"), "{e}");
    }

    #[test]
    fn headers_are_parsed_and_kept_out_of_debug() {
        let c = webhook_with("{ Authorization = \"Bearer s3cr3t\", X-Team = \"ops\" }").unwrap();
        let h = &c.notify.webhooks[0].headers;
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-team"]);
        assert_eq!(h[0].1.as_bytes(), b"Bearer s3cr3t");
        assert!(h.iter().all(|(_, v)| v.is_sensitive()));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn webhook_secret_must_be_standard() {
        assert!(decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(decode_webhook_secret("not base64!").is_err());
        assert!(decode_webhook_secret("whsec_c2hvcnQ=").is_err());
    }
}
