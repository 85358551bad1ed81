//! The `[notify]` section: its retry settings and every channel (`[[notify.webhook]]`,
//! `[[notify.email]]`), each checked here so a channel is built from values that parse.

use super::defaults::{self, MAX_MAX_AGE, MAX_MAX_BACKOFF};
use super::raw::Table;
use super::validate::{check_channel_timeout, check_range, parse_http_url, quoted};
use super::{ConfigError, EmailConfig, NotifyConfig, Tls, WebhookConfig};
use crate::secret::Secret;
use std::collections::HashSet;
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
    t.finish()?;
    Ok(NotifyConfig {
        webhooks,
        emails,
        max_age,
        max_backoff,
    })
}

/// A channel's `name`, which must not be taken by another channel of either kind.
fn channel_name(t: &mut Table, names: &mut HashSet<String>) -> Result<String, ConfigError> {
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
    let secret = w.secret("secret", base)?;
    if let Some(s) = &secret {
        decode_webhook_secret(s.expose()).map_err(|m| w.err("secret", m))?;
    }
    let mut headers = Vec::new();
    if let Some(mut h) = w.table_opt("headers")? {
        let keys: Vec<String> = h.keys();
        for key in keys {
            if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
                return Err(h.err(&key, "is not a valid HTTP header name"));
            }
            let value = h.required_string(&key)?;
            headers.push((key, Secret::new(value)));
        }
    }
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
fn read_addresses(e: &mut Table) -> Result<(String, Vec<String>), ConfigError> {
    let from = e.required_string("from")?;
    from.parse::<lettre::message::Mailbox>()
        .map_err(|err| e.err("from", format!("{from:?} is not an address: {err}")))?;
    let to = e.string_list("to")?.unwrap_or_default();
    if to.is_empty() {
        return Err(e.err(
            "to",
            "missing: list at least one recipient, e.g. [\"oncall@example.com\"]",
        ));
    }
    for addr in &to {
        addr.parse::<lettre::message::Mailbox>()
            .map_err(|err| e.err("to", format!("{addr:?} is not an address: {err}")))?;
    }
    Ok((from, to))
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

    #[test]
    fn webhook_secret_must_be_standard() {
        assert!(decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(decode_webhook_secret("not base64!").is_err());
        assert!(decode_webhook_secret("whsec_c2hvcnQ=").is_err());
    }
}
