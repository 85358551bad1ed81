//! Secrets, and keeping them out of everything recwatch prints or stores.
//!
//! [`Secret`] never prints its value. The rest of this module deals with the places where a
//! secret can arrive as ordinary text: an API or a receiver echoing our credentials back in an
//! answer ([`Redactor`], applied where outside text enters), a half-typed line of the config
//! file quoted in a syntax error ([`mask_toml_line`]), and a webhook URL whose query or last
//! path segment is the credential ([`mask_url`]).

use std::fmt;
use url::Url;

/// Secrets print as `***` through both `Debug` and `Display`; the value is read only through
/// [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";

/// A one- or two-character "secret" would shred every text it is searched in and protects
/// nothing; shorter secrets are not searched for.
const MIN_SECRET_CHARS: usize = 3;

/// A secret at least this long is also redacted where only its beginning appears: an answer
/// that quotes a long IAM token usually cuts it short.
const PREFIX_MATCH_FROM: usize = 32;
/// How much of a long secret's beginning must appear for the rest of the match to be redacted.
const PREFIX_MATCH_CHARS: usize = 24;

/// Every configured secret, searched for in text that came from outside (an API answer's
/// `error_msg` or `description`, a receiver's answer) before anything stores, logs or prints
/// it, so an echo of `X-Auth-Token` or `X-Security-Token` goes no further.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<Secret>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Redactor {
        let mut list: Vec<Secret> = secrets
            .into_iter()
            .filter(|s| s.expose().chars().count() >= MIN_SECRET_CHARS)
            .cloned()
            .collect();
        list.sort_by(|a, b| (b.expose().len(), a.expose()).cmp(&(a.expose().len(), b.expose())));
        list.dedup();
        Redactor { secrets: list }
    }

    /// `text` with every occurrence of every secret (and of the beginning of a long one)
    /// replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            let secret = s.expose();
            if out.contains(secret) {
                out = out.replace(secret, MASK);
            }
            if secret.chars().count() >= PREFIX_MATCH_FROM {
                out = redact_prefixes(&out, secret);
            }
        }
        out
    }

    /// Redacted, then cut to at most `max_chars` characters: what outside text becomes before
    /// it is stored or logged.
    pub fn clean(&self, text: &str, max_chars: usize) -> String {
        cap(&self.redact(text), max_chars)
    }
}

/// Replaces each run of `text` that matches the start of `secret` for at least
/// [`PREFIX_MATCH_CHARS`] characters.
fn redact_prefixes(text: &str, secret: &str) -> String {
    let head_end = secret
        .char_indices()
        .nth(PREFIX_MATCH_CHARS)
        .map_or(secret.len(), |(i, _)| i);
    let head = &secret[..head_end];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(head) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        // How far the text goes on matching the secret.
        let matched: usize = tail
            .chars()
            .zip(secret.chars())
            .take_while(|(a, b)| a == b)
            .map(|(a, _)| a.len_utf8())
            .sum();
        out.push_str(MASK);
        rest = &tail[matched..];
    }
    out.push_str(rest);
    out
}

/// The first `max_chars` characters of `text`, and a note of how much was cut: outside text
/// has no business making a log line or a database column 100 KB long.
pub fn cap(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} more bytes cut)", &text[..cut], text.len() - cut),
    }
}

/// Key names whose values are credentials, wherever they appear in the config file.
pub fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "password", "token", "key", "auth"]
        .iter()
        .any(|w| name.contains(w))
}

/// The position of the `=` after the first secret-named key on a TOML line, if any.
fn secret_assignment(line: &str) -> Option<usize> {
    for (eq, _) in line.match_indices('=') {
        let before = line[..eq].trim_end();
        // The key just before the `=`: bare, dotted or quoted.
        let key_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-.\"'".contains(c)))
            .map_or(0, |i| i + 1);
        let key = &before[key_start..];
        if !key.is_empty() && is_secret_key(key) {
            return Some(eq);
        }
    }
    None
}

/// A line of TOML with everything after the first secret-named key's `=` replaced by `***`:
/// `secret_key = "abc` becomes `secret_key = ***`, and an inline table's `Authorization = ...`
/// is cut there too. Lines without such a key are returned as they are.
pub fn mask_toml_line(line: &str) -> String {
    match secret_assignment(line) {
        Some(eq) => format!("{}= {MASK}", &line[..eq]),
        None => line.to_string(),
    }
}

/// The values written for secret-named keys in TOML text, as written (quotes and spaces
/// trimmed), so a message that quotes one anywhere can be redacted.
pub fn toml_secret_values(text: &str) -> Vec<Secret> {
    text.lines()
        .filter_map(|line| {
            let eq = secret_assignment(line)?;
            let value = line[eq + 1..]
                .trim()
                .trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
            (!value.is_empty()).then(|| Secret::new(value))
        })
        .collect()
}

/// Hosts whose webhook URLs carry their credential in the last path segment.
const CHAT_HOOK_HOSTS: &[&str] = &[
    "hooks.slack.com",
    "discord.com",
    "discordapp.com",
    "open.feishu.cn",
    "open.larksuite.com",
    "webhook.office.com",
];

/// Path segments after which chat services (Mattermost, Rocket.Chat, Discord, Feishu...) put
/// the hook's key.
const HOOK_SEGMENTS: &[&str] = &["hooks", "hook", "webhooks", "services"];

/// A URL as it may be shown: query values, user name and password replaced by `***`, and for
/// chat hooks (whose last path segment is the key) that segment too.
pub fn mask_url(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() {
        let _ = u.set_username(MASK);
    }
    if u.password().is_some() {
        let _ = u.set_password(Some(MASK));
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for k in keys {
            q.append_pair(&k, MASK);
        }
    }
    if u.fragment().is_some() {
        u.set_fragment(Some(MASK));
    }
    let host = u.host_str().unwrap_or("").to_ascii_lowercase();
    let known_host = CHAT_HOOK_HOSTS
        .iter()
        .any(|h| host == *h || host.ends_with(&format!(".{h}")));
    let segments: Vec<String> = u
        .path_segments()
        .map(|s| s.map(str::to_string).collect())
        .unwrap_or_default();
    let hook_path = segments
        .iter()
        .rev()
        .skip(1)
        .any(|s| HOOK_SEGMENTS.contains(&s.to_ascii_lowercase().as_str()));
    if (known_host || hook_path) && segments.iter().any(|s| !s.is_empty()) {
        let mut segments = segments;
        if let Some(last) = segments.iter_mut().rev().find(|s| !s.is_empty()) {
            *last = MASK.to_string();
        }
        u.set_path(&segments.join("/"));
    }
    // The url crate percent-encodes `*` in a path; show the mask as it was meant.
    u.to_string().replace("%2A%2A%2A", MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redaction_table() {
        let long = "MIIEXAYJKoZIhvcNAQcCoIIETTCCBEkCAQExDTALBglghkgBZQMEAgEwggJqBgkq";
        let r = Redactor::new(&[
            Secret::new("tok-123"),
            Secret::new("x"),
            Secret::new("tok-123-longer"),
            Secret::new(long),
        ]);
        let cases: &[(&str, String, &str)] = &[
            ("no secret", "job not found".into(), "job not found"),
            (
                "every occurrence",
                "a tok-123 b tok-123".into(),
                "a *** b ***",
            ),
            (
                "a one-character secret is not searched for",
                "x marks".into(),
                "x marks",
            ),
            (
                "the longer secret is replaced whole",
                "auth tok-123-longer!".into(),
                "auth ***!",
            ),
            (
                "echoed header",
                format!("invalid X-Auth-Token: {long}, retry"),
                "invalid X-Auth-Token: ***, retry",
            ),
            (
                "a long secret cut short",
                format!("token {}... rejected", &long[..40]),
                "token ***... rejected",
            ),
            (
                "a long secret's beginning too short to tell",
                format!("token {}", &long[..10]),
                "token MIIEXAYJKo",
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(r.redact(input), *want, "{name}");
        }
        assert_eq!(format!("{r:?}"), "Redactor(3 secrets)");
    }

    #[test]
    fn cap_table() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("short", "abc", 5, "abc"),
            ("exact", "abcde", 5, "abcde"),
            ("cut", "abcdefgh", 5, "abcde… (3 more bytes cut)"),
            ("char boundary", "ééé", 2, "éé… (2 more bytes cut)"),
        ];
        for (name, input, max, want) in cases {
            assert_eq!(cap(input, *max), *want, "{name}");
        }
        let r = Redactor::new(&[Secret::new("tok-123")]);
        assert_eq!(r.clean("tok-123 and more", 6), "*** an… (6 more bytes cut)");
    }

    #[test]
    fn toml_line_masking_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "half-typed secret",
                "secret_key = \"hunter2",
                "secret_key = ***",
            ),
            ("unquoted", "password=hunter2", "password= ***"),
            ("token", "  token = 'abc'", "  token = ***"),
            (
                "dotted key",
                "api.auth.secret_key = \"x\"",
                "api.auth.secret_key = ***",
            ),
            (
                "header in an inline table",
                "headers = { Authorization = \"Bearer abc\" ",
                "headers = { Authorization = ***",
            ),
            (
                "quoted key",
                "\"X-Api-Key\" = \"abc\"",
                "\"X-Api-Key\" = ***",
            ),
            ("ordinary key", "job_id = \"abc\"", "job_id = \"abc\""),
            ("no assignment", "[api.auth]", "[api.auth]"),
        ];
        for (name, line, want) in cases {
            assert_eq!(mask_toml_line(line), *want, "{name}");
        }
        let values = toml_secret_values("[api.auth]\nsecret_key = \"hunter2\nname = \"x\"\n");
        assert_eq!(
            values.iter().map(Secret::expose).collect::<Vec<_>>(),
            ["hunter2"]
        );
    }

    #[test]
    fn url_masking_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "plain",
                "https://hooks.example.com/recwatch",
                "https://hooks.example.com/recwatch",
            ),
            (
                "query values",
                "https://oapi.dingtalk.com/robot/send?access_token=abc123&x=1",
                "https://oapi.dingtalk.com/robot/send?access_token=***&x=***",
            ),
            (
                "user and password",
                "https://user:pw@example.com/hook",
                "https://***:***@example.com/hook",
            ),
            (
                "slack",
                "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
                "https://hooks.slack.com/services/T000/B000/***",
            ),
            (
                "discord",
                "https://discord.com/api/webhooks/123/tokenvalue",
                "https://discord.com/api/webhooks/123/***",
            ),
            (
                "feishu",
                "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d",
                "https://open.feishu.cn/open-apis/bot/v2/hook/***",
            ),
            (
                "teams",
                "https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def/ghi",
                "https://contoso.webhook.office.com/webhookb2/abc/IncomingWebhook/def/***",
            ),
            (
                "mattermost-style path",
                "https://chat.example.com/hooks/xyz",
                "https://chat.example.com/hooks/***",
            ),
        ];
        for (name, input, want) in cases {
            let url = Url::parse(input).unwrap();
            assert_eq!(mask_url(&url), *want, "{name}");
        }
    }
}
