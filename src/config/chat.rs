//! The chat and paging channels of `[notify]`: `[[notify.feishu]]`, `[[notify.dingtalk]]`,
//! `[[notify.wecom]]`, `[[notify.slack]]`, `[[notify.teams]]`, `[[notify.pagerduty]]`, and the
//! `language` their messages are written in.
//!
//! Every one of these URLs is a credential (the robot's token is in its path or query), so
//! the URL is read like a secret (`url` or `url_file`), kept as a [`SecretUrl`] whose Debug
//! masks it, and no error message quotes it.

use super::ConfigError;
use super::defaults;
use super::raw::Table;
use super::validate::check_channel_timeout;
use crate::secret::{Secret, mask_url};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// The vendor a chat channel speaks to; its config section is `[[notify.<as_str>]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatKind {
    Feishu,
    DingTalk,
    WeCom,
    Slack,
    Teams,
    PagerDuty,
}

impl ChatKind {
    pub const ALL: [ChatKind; 6] = [
        ChatKind::Feishu,
        ChatKind::DingTalk,
        ChatKind::WeCom,
        ChatKind::Slack,
        ChatKind::Teams,
        ChatKind::PagerDuty,
    ];

    /// The section name, the channel's `kind` in output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Feishu => "feishu",
            ChatKind::DingTalk => "dingtalk",
            ChatKind::WeCom => "wecom",
            ChatKind::Slack => "slack",
            ChatKind::Teams => "teams",
            ChatKind::PagerDuty => "pagerduty",
        }
    }

    /// The keys its section may hold.
    fn keys(self) -> &'static [&'static str] {
        match self {
            // The two robots that sign and can demand a keyword.
            ChatKind::Feishu | ChatKind::DingTalk => &[
                "name",
                "url",
                "url_file",
                "secret",
                "secret_file",
                "keyword",
                "timeout",
            ],
            ChatKind::WeCom | ChatKind::Slack | ChatKind::Teams => {
                &["name", "url", "url_file", "timeout"]
            }
            ChatKind::PagerDuty => &[
                "name",
                "routing_key",
                "routing_key_file",
                "url",
                "url_file",
                "timeout",
            ],
        }
    }
}

/// The language of chat messages (`notify.language`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Language {
    #[default]
    En,
    ZhCn,
}

impl Language {
    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "en" => Some(Language::En),
            "zh-CN" => Some(Language::ZhCn),
            _ => None,
        }
    }
}

/// A URL that is a credential: Debug and [`SecretUrl::masked`] hide its token.
#[derive(Clone)]
pub struct SecretUrl {
    url: Url,
}

impl SecretUrl {
    pub fn new(url: Url) -> SecretUrl {
        SecretUrl { url }
    }

    /// The URL itself, for the one place that sends to it.
    pub fn expose(&self) -> &Url {
        &self.url
    }

    /// What may be shown: query values and a hook's key replaced by `***`.
    pub fn masked(&self) -> String {
        mask_url(&self.url)
    }

    /// Every part of the URL that may be a credential, to scrub from error texts: the whole
    /// URL, its query values and its longer path segments.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut out = vec![Secret::new(self.url.as_str())];
        out.extend(
            self.url
                .query_pairs()
                .filter(|(_, v)| v.len() >= 6)
                .map(|(_, v)| Secret::new(v.into_owned())),
        );
        if let Some(segments) = self.url.path_segments() {
            out.extend(
                segments
                    .filter(|s| s.len() >= 16)
                    .map(|s| Secret::new(s.to_string())),
            );
        }
        out
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// One chat or paging channel.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    pub kind: ChatKind,
    pub name: String,
    pub url: SecretUrl,
    /// The robot's signing secret (Feishu, DingTalk); `None` sends unsigned.
    pub secret: Option<Secret>,
    /// PagerDuty's integration key; `None` for the other kinds.
    pub routing_key: Option<Secret>,
    /// A word every message must contain (Feishu and DingTalk robots can demand one).
    pub keyword: Option<String>,
    pub timeout: Duration,
}

/// Every `[[notify.<kind>]]` of every chat kind, names checked against `names`.
pub(super) fn read_chats(
    t: &mut Table,
    base: Option<&Path>,
    names: &mut HashSet<String>,
) -> Result<Vec<ChatConfig>, ConfigError> {
    let mut out = Vec::new();
    for kind in ChatKind::ALL {
        for c in t.array_of_tables(kind.as_str())? {
            out.push(read_chat(kind, c, base, names)?);
        }
    }
    Ok(out)
}

fn read_chat(
    kind: ChatKind,
    mut t: Table,
    base: Option<&Path>,
    names: &mut HashSet<String>,
) -> Result<ChatConfig, ConfigError> {
    t.known(kind.keys())?;
    let name = super::channels::channel_name(&mut t, names)?;
    let url = match (t.secret("url", base)?, kind) {
        (Some(text), _) => read_url(&t, kind, &text)?,
        (None, ChatKind::PagerDuty) => SecretUrl::new(
            Url::parse(defaults::PAGERDUTY_URL).expect("the Events API v2 URL parses"),
        ),
        (None, _) => {
            return Err(t.err(
                "url",
                format!(
                    "missing: set url (or url_file) to the {} robot's webhook address",
                    kind.as_str()
                ),
            ));
        }
    };
    let secret = match kind {
        ChatKind::Feishu | ChatKind::DingTalk => t.secret("secret", base)?,
        _ => None,
    };
    if kind == ChatKind::DingTalk
        && secret
            .as_ref()
            .is_some_and(|s| !s.expose().starts_with("SEC"))
    {
        return Err(t.err(
            "secret",
            "is not a DingTalk signing secret: those start with SEC; copy it from the robot's security settings (加签)",
        ));
    }
    let routing_key = match kind {
        ChatKind::PagerDuty => Some(read_routing_key(&mut t, base)?),
        _ => None,
    };
    let keyword = match kind {
        ChatKind::Feishu | ChatKind::DingTalk => t.nonempty_string("keyword")?,
        _ => None,
    };
    let timeout = t.duration("timeout")?.unwrap_or(defaults::CHAT_TIMEOUT);
    check_channel_timeout(&t, timeout)?;
    t.finish()?;
    Ok(ChatConfig {
        kind,
        name,
        url,
        secret,
        routing_key,
        keyword,
        timeout,
    })
}

/// The webhook address, checked without ever quoting it (it holds the robot's key).
fn read_url(t: &Table, kind: ChatKind, text: &Secret) -> Result<SecretUrl, ConfigError> {
    let not_shown = "(the value is not shown: it holds the robot's key)";
    let url = Url::parse(text.expose().trim()).map_err(|e| {
        t.err(
            "url",
            format!("is not a URL ({e}) {not_shown}; copy the whole webhook address"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(t.err(
            "url",
            format!("must be an http:// or https:// URL with a host {not_shown}"),
        ));
    }
    let has = |key: &str| url.query_pairs().any(|(k, v)| k == key && !v.is_empty());
    match kind {
        ChatKind::DingTalk if !has("access_token") => Err(t.err(
            "url",
            format!("has no access_token=... {not_shown}; copy the robot's whole Webhook address, https://oapi.dingtalk.com/robot/send?access_token=..."),
        )),
        ChatKind::WeCom if !has("key") => Err(t.err(
            "url",
            format!("has no key=... {not_shown}; copy the group robot's whole webhook address, https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."),
        )),
        _ => Ok(SecretUrl::new(url)),
    }
}

/// PagerDuty's Events API v2 integration key: 32 letters and digits.
fn read_routing_key(t: &mut Table, base: Option<&Path>) -> Result<Secret, ConfigError> {
    let Some(key) = t.secret("routing_key", base)? else {
        return Err(t.err(
            "routing_key",
            "missing: set routing_key (or routing_key_file) to the Integration Key of an Events API v2 integration",
        ));
    };
    let ok = key.expose().len() == 32 && key.expose().chars().all(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(t.err(
            "routing_key",
            "is not an Events API v2 integration key (32 letters and digits; the value is not shown); copy the Integration Key from the service's Integrations tab",
        ));
    }
    Ok(key)
}

/// `notify.language`.
pub(super) fn read_language(t: &mut Table) -> Result<Language, ConfigError> {
    match t.string("language")? {
        None => Ok(Language::default()),
        Some(s) => Language::parse(s.trim()).ok_or_else(|| {
            t.err(
                "language",
                format!("{s:?} is not a language; use \"en\" or \"zh-CN\""),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, parse_str};
    use super::*;

    const ROUTING_KEY: &str = "R0123456789abcdef0123456789abcde";

    fn load(notify: &str) -> Result<Config, ConfigError> {
        let text = format!("[api.auth]\ntoken = \"t\"\n{notify}\n");
        parse_str(&text, Vec::<(String, String)>::new(), None)
    }

    #[test]
    fn every_kind_loads() {
        let c = load(&format!(
            r#"
[notify]
language = "zh-CN"
[[notify.feishu]]
name = "fs"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/0123456789abcdef-fs"
secret = "fs-secret"
keyword = "recwatch"
[[notify.dingtalk]]
name = "dt"
url = "https://oapi.dingtalk.com/robot/send?access_token=dt-token-0123456789"
secret = "SECdemo"
[[notify.wecom]]
name = "wc"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wc-key-0123456789"
[[notify.slack]]
name = "sl"
url = "https://hooks.slack.com/services/T000/B000/slack0123456789abcdef"
timeout = "3s"
[[notify.teams]]
name = "tm"
url = "https://prod.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=teams0123456789"
[[notify.pagerduty]]
name = "pd"
routing_key = "{ROUTING_KEY}"
"#
        ))
        .expect("loads");
        let kinds: Vec<_> = c.notify.chats.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ChatKind::ALL);
        assert_eq!(c.notify.language, Language::ZhCn);
        assert_eq!(c.notify.chats[0].keyword.as_deref(), Some("recwatch"));
        assert_eq!(c.notify.chats[3].timeout, Duration::from_secs(3));
        assert_eq!(
            c.notify.chats[5].url.expose().as_str(),
            defaults::PAGERDUTY_URL
        );
        assert_eq!(
            c.notify.channel_names(),
            ["fs", "dt", "wc", "sl", "tm", "pd"]
        );
        let debug = format!("{c:?}");
        for secret in [
            "0123456789abcdef-fs",
            "fs-secret",
            "SECdemo",
            "dt-token",
            "wc-key",
            "slack0123456789",
            "teams0123456789",
            ROUTING_KEY,
        ] {
            assert!(!debug.contains(secret), "{secret} in Debug output");
        }
    }

    /// (name, config, location the error names, words it must say); no message may quote the
    /// credentials (the URLs, secrets and keys above are all made of "s3cr3t").
    #[test]
    fn bad_channels_are_refused_without_showing_credentials() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "no url",
                "[[notify.slack]]\nname = \"s\"",
                "notify.slack[0].url",
                "missing",
            ),
            (
                "not a url",
                "[[notify.slack]]\nname = \"s\"\nurl = \"hooks.slack.com/s3cr3t\"",
                "notify.slack[0].url",
                "not a URL",
            ),
            (
                "not http",
                "[[notify.teams]]\nname = \"t\"\nurl = \"ftp://x/s3cr3t\"",
                "notify.teams[0].url",
                "http:// or https://",
            ),
            (
                "dingtalk without access_token",
                "[[notify.dingtalk]]\nname = \"d\"\nurl = \"https://oapi.dingtalk.com/robot/send?token=s3cr3t\"",
                "notify.dingtalk[0].url",
                "access_token",
            ),
            (
                "dingtalk secret without SEC",
                "[[notify.dingtalk]]\nname = \"d\"\nurl = \"https://x/?access_token=s3cr3t\"\nsecret = \"s3cr3t\"",
                "notify.dingtalk[0].secret",
                "start with SEC",
            ),
            (
                "wecom without key",
                "[[notify.wecom]]\nname = \"w\"\nurl = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?k=s3cr3t\"",
                "notify.wecom[0].url",
                "key=",
            ),
            (
                "a secret where nothing signs",
                "[[notify.wecom]]\nname = \"w\"\nurl = \"https://x/?key=s3cr3t\"\nsecret = \"s3cr3t\"",
                "notify.wecom[0].secret",
                "unknown key",
            ),
            (
                "keyword on slack",
                "[[notify.slack]]\nname = \"s\"\nurl = \"https://x/s3cr3t\"\nkeyword = \"k\"",
                "notify.slack[0].keyword",
                "unknown key",
            ),
            (
                "pagerduty without key",
                "[[notify.pagerduty]]\nname = \"p\"",
                "notify.pagerduty[0].routing_key",
                "missing",
            ),
            (
                "pagerduty key too short",
                "[[notify.pagerduty]]\nname = \"p\"\nrouting_key = \"s3cr3t\"",
                "notify.pagerduty[0].routing_key",
                "32 letters",
            ),
            (
                "url and url_file",
                "[[notify.slack]]\nname = \"s\"\nurl = \"https://x/s3cr3t\"\nurl_file = \"/nonexistent\"",
                "notify.slack[0].url",
                "not both",
            ),
            (
                "name taken by another kind",
                "[[notify.slack]]\nname = \"s\"\nurl = \"https://x/s3cr3t\"\n[[notify.teams]]\nname = \"s\"\nurl = \"https://x/s3cr3t\"",
                "notify.teams[0].name",
                "used twice",
            ),
            (
                "timeout too long",
                "[[notify.slack]]\nname = \"s\"\nurl = \"https://x/s3cr3t\"\ntimeout = \"1h\"",
                "notify.slack[0].timeout",
                "",
            ),
            (
                "unknown language",
                "[notify]\nlanguage = \"zh\"",
                "notify.language",
                "zh-CN",
            ),
        ];
        for (name, text, location, words) in cases {
            let e = load(text).expect_err(name);
            assert_eq!(e.location, *location, "{name}: {e}");
            assert!(e.message.contains(words), "{name}: {e}");
            assert!(!e.to_string().contains("s3cr3t"), "{name}: {e}");
        }
    }

    #[test]
    fn urls_and_keys_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("url");
        std::fs::write(
            &url,
            "https://hooks.slack.com/services/T/B/filetoken0123456789\n",
        )
        .unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, format!("{ROUTING_KEY}\n")).unwrap();
        let c = load(&format!(
            "[[notify.slack]]\nname = \"s\"\nurl_file = \"{}\"\n[[notify.pagerduty]]\nname = \"p\"\nrouting_key_file = \"{}\"",
            url.display(),
            key.display()
        ))
        .unwrap();
        assert!(
            c.notify.chats[0]
                .url
                .expose()
                .as_str()
                .ends_with("filetoken0123456789")
        );
        assert_eq!(
            c.notify.chats[1].routing_key.as_ref().unwrap().expose(),
            ROUTING_KEY
        );
    }

    #[test]
    fn secret_url_hides_its_parts() {
        let u = SecretUrl::new(
            "https://oapi.dingtalk.com/robot/send?access_token=abcdef123456"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            format!("{u:?}"),
            "https://oapi.dingtalk.com/robot/send?access_token=***"
        );
        let r = crate::secret::Redactor::new(&u.secrets());
        assert_eq!(r.redact("token abcdef123456 echoed"), "token *** echoed");
    }
}
