//! Credentials that never print, and keeping them out of text that came from outside.
//!
//! [`Secret`] never prints its value. [`Redactor`] removes every configured secret from an
//! answer's text (an API gateway echoing `X-Auth-Token` back in an error message) before the
//! text is stored, logged or shown.

use std::fmt;

/// Secrets print as `***` through both `Debug` and `Display`; the value is read only through
/// [`Secret::expose`], which makes every use easy to find.
///
/// ```
/// use recwatch_rtc::Secret;
///
/// let sk = Secret::new("hunter2");
/// assert_eq!(format!("{sk} {sk:?} {:?}", Some(&sk)), "*** *** Some(***)");
/// assert_eq!(sk.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; from here on it prints as `***`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it (a header, an HMAC key).
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
///
/// [`RtcClient::get_job`](crate::RtcClient::get_job) already redacts the credentials it
/// sends from every answer; a caller uses its own for other outside text.
///
/// ```
/// use recwatch_rtc::{Redactor, Secret};
///
/// let token = Secret::new("tok-123");
/// let redactor = Redactor::new([&token]);
/// assert_eq!(redactor.redact("invalid X-Auth-Token: tok-123"), "invalid X-Auth-Token: ***");
/// assert_eq!(redactor.clean("tok-123 and much more", 6), "*** an… (11 more bytes cut)");
/// ```
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
    /// A redactor for these secrets. Secrets under 3 characters are left out: they would
    /// shred every text and protect nothing.
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
}
