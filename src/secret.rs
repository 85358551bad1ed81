//! Secrets in the daemon's own texts: a half-typed line of the config file quoted in a syntax
//! error ([`mask_toml_line`]) and a webhook URL whose query or last path segment is the
//! credential ([`mask_url`]). [`Secret`] and [`Redactor`] (outside text) live in the RTC
//! client crate, which needs them first, and are re-exported here.

pub use recwatch_rtc::secret::{MASK, Redactor, Secret, cap};
use url::Url;

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
    // Whichever assignment comes first on the line decides: a URL's own query may name a
    // token (`?access_token=`), and the URL's masking covers it.
    match (secret_assignment(line), url_assignment(line)) {
        (Some(s), Some(u)) if u < s => format!("{}= {}", &line[..u], mask_url_text(&line[u + 1..])),
        (Some(eq), _) => format!("{}= {MASK}", &line[..eq]),
        (None, Some(eq)) => format!("{}= {}", &line[..eq], mask_url_text(&line[eq + 1..])),
        (None, None) => line.to_string(),
    }
}

/// The position of the `=` after a URL-named key (`url`, `public_url`, ...) on a TOML line.
fn url_assignment(line: &str) -> Option<usize> {
    let eq = line.find('=')?;
    let before = line[..eq].trim_end();
    let key_start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_-.\"'".contains(c)))
        .map_or(0, |i| i + 1);
    let key = before[key_start..].trim_matches(|c| c == '"' || c == '\'');
    key.to_ascii_lowercase().ends_with("url").then_some(eq)
}

/// A URL as written on a config line, perhaps half-typed (so it may not parse): the scheme
/// and host stay, everything after them (where hooks and heartbeat pings keep their keys)
/// becomes `***`, and so does a `user:password@` before the host (`storage.url`'s password).
fn mask_url_text(value: &str) -> String {
    let v = value.trim();
    let Some(scheme_end) = v.find("://") else {
        return MASK.to_string();
    };
    let rest = &v[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']);
    let authority = &rest[..end.unwrap_or(rest.len())];
    let host = match authority.rfind('@') {
        Some(at) => format!("{MASK}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let scheme = &v[..scheme_end + 3];
    match end {
        Some(i) => format!("{scheme}{host}{}{MASK}", &rest[i..i + 1]),
        None => format!("{scheme}{host}"),
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
                "a half-typed heartbeat URL keeps only its host",
                "url = \"https://hc-ping.com/5f1c2d3e-key",
                "url = \"https://hc-ping.com/***",
            ),
            (
                "a hook's query",
                "url = \"https://oapi.dingtalk.com?access_token=abc\"",
                "url = \"https://oapi.dingtalk.com?***",
            ),
            (
                "a public_url",
                "public_url = \"https://recwatch.example.com/x",
                "public_url = \"https://recwatch.example.com/***",
            ),
            ("not a URL", "url = \"hc-ping.com/key", "url = ***"),
            (
                "a half-typed database URL hides its user and password",
                "url = \"postgres://rec:pw-secret@db.internal:5432/recw",
                "url = \"postgres://***@db.internal:5432/***",
            ),
            (
                "a password with no path after the host",
                "url = \"postgresql://rec:pw-secret@db.internal",
                "url = \"postgresql://***@db.internal",
            ),
            (
                "a host alone",
                "url = \"https://hc-ping.com",
                "url = \"https://hc-ping.com",
            ),
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
