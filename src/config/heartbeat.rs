//! `[heartbeat]`: a dead man's switch for users without Prometheus. recwatch pings `url`
//! every `interval` while it is ready; the service behind the URL (Healthchecks.io, Uptime
//! Kuma's push monitors, Cronitor) pages someone when the pings stop. The URL usually is the
//! credential (its path or query is the check's key), so it is a [`HeartbeatUrl`]: never
//! printed, logged or quoted in an error.

use super::ConfigError;
use super::defaults;
use super::raw::Table;
use super::validate::check_range;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use url::Url;

#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatConfig {
    /// `None`: no heartbeat (the default).
    pub url: Option<HeartbeatUrl>,
    pub interval: Duration,
    pub method: PingMethod,
    /// How long one ping may take (at most `interval`, see [`HeartbeatConfig::ping_timeout`]).
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> HeartbeatConfig {
        HeartbeatConfig {
            url: None,
            interval: defaults::HEARTBEAT_INTERVAL,
            method: PingMethod::Get,
            timeout: defaults::HEARTBEAT_TIMEOUT,
        }
    }
}

impl HeartbeatConfig {
    /// A ping never outlasts the interval, so at most one is ever in flight.
    pub fn ping_timeout(&self) -> Duration {
        self.timeout.min(self.interval)
    }
}

/// `GET`, or `POST` with a short status text as the body (Healthchecks.io shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingMethod {
    Get,
    Post,
}

/// The ping URL, parsed at load. `Debug` and `Display` print `***`: the URL is the check's
/// key.
#[derive(Clone, PartialEq)]
pub struct HeartbeatUrl(Url);

impl HeartbeatUrl {
    /// An http(s) URL with a host, or `None`.
    pub fn parse(text: &str) -> Option<HeartbeatUrl> {
        Url::parse(text.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .map(HeartbeatUrl)
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Debug for HeartbeatUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secret::MASK)
    }
}

impl fmt::Display for HeartbeatUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secret::MASK)
    }
}

pub(super) fn read_heartbeat(
    mut t: Table,
    base: Option<&Path>,
) -> Result<HeartbeatConfig, ConfigError> {
    t.known(&["url", "url_file", "interval", "method", "timeout"])?;
    // Read like a secret (inline or from a file, never quoted back in an error).
    let url = match t.secret("url", base)? {
        None => None,
        // The value is not quoted: it is the check's key.
        Some(s) => Some(HeartbeatUrl::parse(s.expose()).ok_or_else(|| {
            t.err(
                "url",
                "is not an http:// or https:// URL with a host; copy the ping URL from your monitoring service (e.g. https://hc-ping.com/<uuid>)",
            )
        })?),
    };
    let interval = t
        .duration("interval")?
        .unwrap_or(defaults::HEARTBEAT_INTERVAL);
    check_range(
        &t,
        "interval",
        interval,
        defaults::MAX_HEARTBEAT_INTERVAL,
        "a monitor pinged less often than daily is no dead man's switch",
        "\"1m\"",
    )?;
    let timeout = t
        .duration("timeout")?
        .unwrap_or(defaults::HEARTBEAT_TIMEOUT);
    check_range(
        &t,
        "timeout",
        timeout,
        defaults::MAX_CHANNEL_TIMEOUT,
        "a ping is one small request",
        "\"10s\"",
    )?;
    let method = match t.string("method")?.map(|m| m.to_ascii_lowercase()) {
        None => PingMethod::Get,
        Some(m) if m == "get" => PingMethod::Get,
        Some(m) if m == "post" => PingMethod::Post,
        Some(m) => {
            return Err(t.err(
                "method",
                format!("{m:?} is not a method; use \"get\" or \"post\" (post sends a short status as the body)"),
            ));
        }
    };
    t.finish()?;
    Ok(HeartbeatConfig {
        url,
        interval,
        method,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    const BASE: &str = "[api.auth]\ntoken = \"t\"\n";

    fn parse(extra: &str) -> Result<HeartbeatConfig, ConfigError> {
        parse_str(
            &format!("{BASE}{extra}"),
            Vec::<(String, String)>::new(),
            None,
        )
        .map(|c| c.heartbeat)
    }

    #[test]
    fn off_by_default_and_every_key_read() {
        let hb = parse("").unwrap();
        assert!(hb.url.is_none());
        assert_eq!(hb.interval, defaults::HEARTBEAT_INTERVAL);
        assert_eq!(hb.method, PingMethod::Get);
        let hb = parse(
            "[heartbeat]\nurl = \"https://hc-ping.com/abc\"\ninterval = \"5m\"\nmethod = \"POST\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
        assert_eq!(
            hb.url.as_ref().unwrap().url().as_str(),
            "https://hc-ping.com/abc"
        );
        assert_eq!(hb.interval, Duration::from_secs(300));
        assert_eq!(hb.method, PingMethod::Post);
        assert_eq!(hb.ping_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn url_file_is_read_and_a_timeout_never_outlasts_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hb"), "https://hc-ping.com/from-file\n").unwrap();
        let hb = parse_str(
            &format!("{BASE}[heartbeat]\nurl_file = \"hb\"\ninterval = \"2s\"\n"),
            Vec::<(String, String)>::new(),
            Some(dir.path()),
        )
        .unwrap()
        .heartbeat;
        assert_eq!(
            hb.url.as_ref().unwrap().url().as_str(),
            "https://hc-ping.com/from-file"
        );
        assert_eq!(hb.ping_timeout(), Duration::from_secs(2));
    }

    /// Each bad value is refused naming the key and the fix, and never quotes the URL.
    #[test]
    fn errors_name_the_key_and_never_show_the_url() {
        let cases = [
            (
                "not a URL",
                "[heartbeat]\nurl = \"hc-ping.com/secret-1\"\n",
                "heartbeat.url",
                "http:// or https://",
            ),
            (
                "another scheme",
                "[heartbeat]\nurl = \"ftp://hc-ping.com/secret-1\"\n",
                "heartbeat.url",
                "http:// or https://",
            ),
            (
                "inline and from a file",
                "[heartbeat]\nurl = \"https://hc-ping.com/secret-1\"\nurl_file = \"/x\"\n",
                "heartbeat.url",
                "not both",
            ),
            (
                "no interval",
                "[heartbeat]\nurl = \"https://hc-ping.com/secret-1\"\ninterval = \"0s\"\n",
                "heartbeat.interval",
                "longer than 0s",
            ),
            (
                "an interval of a week",
                "[heartbeat]\nurl = \"https://hc-ping.com/secret-1\"\ninterval = \"7d\"\n",
                "heartbeat.interval",
                "dead man's switch",
            ),
            (
                "a method it does not speak",
                "[heartbeat]\nurl = \"https://hc-ping.com/secret-1\"\nmethod = \"put\"\n",
                "heartbeat.method",
                "\"get\" or \"post\"",
            ),
            (
                "a misspelt key",
                "[heartbeat]\nurl = \"https://hc-ping.com/secret-1\"\nintervall = \"1m\"\n",
                "heartbeat.intervall",
                "interval",
            ),
        ];
        for (name, text, location, fix) in cases {
            let e = parse(text).expect_err(name);
            let shown = format!("{e} {e:?}");
            assert_eq!(e.location, location, "{name}: {shown}");
            assert!(shown.contains(fix), "{name}: {shown}");
            assert!(!shown.contains("secret-1"), "{name} shows the URL: {shown}");
        }
    }
}
