//! The common shape of a long watch list read without a TOML parser (issue 23, item 7): a
//! `[[jobs]]` entry whose lines are each `key = value` with a known key and a one-line value
//! (a string without escapes, `true`/`false`, a list of such strings), comments and blank
//! lines. `recwatch status` reads the whole file on every run, and at 100,000 entries the
//! toml lexer and parser plus a table per entry read by key path were ~2.3 G instructions,
//! most of the command's time; here each entry's values are borrowed from the text and
//! checked once.
//!
//! Nothing is told from here: the lean reading either gives exactly the configuration the
//! general path (`split`, then the whole file as one tree) would give, or declines, and the
//! file goes down that path, which says what is wrong. It declines on anything outside the
//! shape (an escape, a number, a multi-line value, an unknown or repeated key) and on any
//! value the general path would refuse (an id, a kind, an interval, a channel, the same job
//! twice), checked with the same functions.
//!
//! The file is cut by lines, which is only right when no value spans lines: every line
//! outside the entries is checked to close what it opens (strings, brackets), and every line
//! inside them is read strictly, so a header-like line inside a multi-line value never
//! passes for a header.

use super::defaults::{MAX_INTERVAL, MIN_INTERVAL};
use super::{JobConfig, NotifyConfig, PollConfig};
use crate::domain::{IdsHash, JobKey, JobKind};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The file as two parts: its text without the `[[jobs]]` entries, and each entry's lines.
pub(super) struct Lean<'a> {
    /// Every line outside a `[[jobs]]` entry, in the file's order.
    pub(super) rest: String,
    /// Each entry's lines, after its header's.
    entries: Vec<&'a str>,
}

/// What a header line starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Entry,
    Other,
}

/// Cuts `text` by lines, or `None` when a line outside the entries may open a value that
/// spans lines, a header names `jobs` other than as `[[jobs]]` (or is quoted), or there is no
/// entry. The entries' own lines are not looked at here ([`Lean::jobs`] reads them).
pub(super) fn cut(text: &str) -> Option<Lean<'_>> {
    let mut rest = String::new();
    let mut entries = Vec::new();
    // Where the current entry's lines start, while in one.
    let mut entry: Option<usize> = None;
    let mut at = 0;
    while at < text.len() {
        if entry.is_some() {
            // Inside an entry only the next header matters: the entry's lines are
            // `Lean::jobs`'s to read. One search for `[` over them instead of a look at each
            // line (issue 23, item 7: ~45 M instructions of `status` at 100,000 entries).
            match next_header_line(text, at) {
                Some(start) => at = start,
                None => break,
            }
        }
        let end = find(&text[at..], b'\n').map_or(text.len(), |i| at + i + 1);
        let line = &text[at..end];
        let head = line.trim_start_matches([' ', '\t']);
        if head.starts_with('[') {
            if let Some(from) = entry.take() {
                entries.push(&text[from..at]);
            }
            match header(head)? {
                Part::Entry => entry = Some(end),
                Part::Other => rest.push_str(line),
            }
        } else if entry.is_none() {
            if !closed(head) {
                return None;
            }
            rest.push_str(line);
        }
        at = end;
    }
    if let Some(from) = entry {
        entries.push(&text[from..]);
    }
    if entries.is_empty() {
        return None;
    }
    Some(Lean { rest, entries })
}

/// Where the first line at or after `from` (a line's start) whose first character after
/// spaces and tabs is `[` starts, if there is one.
fn next_header_line(text: &str, from: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut search = from;
    loop {
        let bracket = search + memchr::memchr(b'[', &b[search..])?;
        let start = memchr::memrchr(b'\n', &b[from..bracket]).map_or(from, |i| from + i + 1);
        if b[start..bracket].iter().all(|c| *c == b' ' || *c == b'\t') {
            return Some(start);
        }
        search = bracket + 1;
    }
}

/// A header line (leading whitespace gone): exactly `[[jobs]]` (spaces inside allowed, a
/// comment after), another table named by a bare key, or `None` (`jobs` named otherwise, a
/// quoted first key, anything odd).
fn header(head: &str) -> Option<Part> {
    let line = without_newline(head);
    let (inner, array) = match line.strip_prefix("[[") {
        Some(inner) => (inner, true),
        None => (&line[1..], false),
    };
    let inner = inner.trim_start_matches([' ', '\t']);
    let key_len = inner.bytes().take_while(|b| bare(*b)).count();
    let first = &inner[..key_len];
    if first.is_empty() {
        return None;
    }
    if first != "jobs" {
        return closed(line).then_some(Part::Other);
    }
    let after = inner[key_len..]
        .trim_start_matches([' ', '\t'])
        .strip_prefix("]]")?;
    (array && end_of_line(after) && !has_control(after)).then_some(Part::Entry)
}

/// Where the first `b` (ASCII) is in `s`: memchr's word-at-a-time search (`str::find` with a
/// `char` was a fifth of the lean reading, and a plain loop a byte at a time most of what was
/// left of `cut`, issue 23).
fn find(s: &str, b: u8) -> Option<usize> {
    memchr::memchr(b, s.as_bytes())
}

/// A line without its line break (`\n` or `\r\n`).
fn without_newline(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// A character of a bare key.
fn bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Only whitespace and perhaps a comment are left on the line.
fn end_of_line(tail: &str) -> bool {
    let tail = tail.trim_start_matches([' ', '\t']);
    tail.is_empty() || tail.starts_with('#')
}

/// A control character TOML allows in no comment and no string (a tab it allows). Eight bytes
/// at a time first (issue 23, item 7: every line of every entry is looked at): a word with no
/// byte below 0x20 and no DEL has none; only a line with one (a tab, mostly) is looked at a
/// byte at a time.
fn has_control(s: &str) -> bool {
    use crate::domain::words::{any_word, below, equal};
    let b = s.as_bytes();
    let exact = || b.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
    if b.len() < 8 {
        return exact();
    }
    any_word(b, |w| below(w, 0x20) | equal(w, 0x7f)) && exact()
}

/// Whether `line` closes every string, array and inline table it opens: false for a
/// multi-line string's quotes, a string left open, or brackets left open. Whether the line is
/// valid TOML is the parser's to say (the rest goes through it).
fn closed(line: &str) -> bool {
    let b = without_newline(line).as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => break,
            q @ (b'"' | b'\'') => {
                if b[i..].starts_with(&[q, q, q]) {
                    return false;
                }
                i += 1;
                while i < b.len() && b[i] != q {
                    // Only a basic string has escapes: `\"` does not end it.
                    i += if q == b'"' && b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return false;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

/// One value of the shape.
#[derive(Debug, PartialEq, Eq)]
enum Value<'a> {
    /// A basic string without escapes or a literal string: its text as written.
    Str(&'a str),
    Bool(bool),
    /// A list of such strings.
    List(Vec<&'a str>),
}

/// The value at the start of `s` and what follows it, or `None` outside the shape.
fn value(s: &str) -> Option<(Value<'_>, &str)> {
    match s.as_bytes().first()? {
        b'"' => {
            let body = &s[1..];
            let end = find(body, b'"')?;
            let text = &body[..end];
            (!text.contains('\\')).then_some((Value::Str(text), &body[end + 1..]))
        }
        b'\'' => {
            let body = &s[1..];
            let end = find(body, b'\'')?;
            Some((Value::Str(&body[..end]), &body[end + 1..]))
        }
        b't' => Some((Value::Bool(true), s.strip_prefix("true")?)),
        b'f' => Some((Value::Bool(false), s.strip_prefix("false")?)),
        b'[' => {
            let mut items = Vec::new();
            let mut r = &s[1..];
            loop {
                r = r.trim_start_matches([' ', '\t']);
                if let Some(after) = r.strip_prefix(']') {
                    return Some((Value::List(items), after));
                }
                let (Value::Str(item), after) = value(r)? else {
                    return None;
                };
                items.push(item);
                r = after.trim_start_matches([' ', '\t']);
                match r.strip_prefix(',') {
                    Some(after) => r = after,
                    None if r.starts_with(']') => {}
                    None => return None,
                }
            }
        }
        _ => None,
    }
}

/// An entry's keys as written (every key at most once), or `None` outside the shape.
#[derive(Default, Debug, PartialEq, Eq)]
struct Fields<'a> {
    name: Option<&'a str>,
    app_id: Option<&'a str>,
    job_id: Option<&'a str>,
    kind: Option<&'a str>,
    interval: Option<&'a str>,
    notify: Option<Vec<&'a str>>,
    remediate: Option<bool>,
}

/// An entry's lines read strictly: each blank, a comment, or `key = value` with a known key
/// (once) and a value of its type in the shape, then nothing but a comment.
fn fields(body: &str) -> Option<Fields<'_>> {
    let mut f = Fields::default();
    let mut at = 0;
    while at < body.len() {
        let end = find(&body[at..], b'\n').map_or(body.len(), |i| at + i + 1);
        let line = without_newline(&body[at..end]);
        at = end;
        if has_control(line) {
            return None;
        }
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key_len = line.bytes().take_while(|b| bare(*b)).count();
        let key = &line[..key_len];
        let s = line[key_len..]
            .trim_start_matches([' ', '\t'])
            .strip_prefix('=')?
            .trim_start_matches([' ', '\t']);
        let (v, after) = value(s)?;
        if !end_of_line(after) {
            return None;
        }
        match key {
            "name" => put(&mut f.name, v)?,
            "app_id" => put(&mut f.app_id, v)?,
            "job_id" => put(&mut f.job_id, v)?,
            "kind" => put(&mut f.kind, v)?,
            "interval" => put(&mut f.interval, v)?,
            "notify" => match (&f.notify, v) {
                (None, Value::List(l)) => f.notify = Some(l),
                _ => return None,
            },
            "remediate" => match (f.remediate, v) {
                (None, Value::Bool(b)) => f.remediate = Some(b),
                _ => return None,
            },
            _ => return None,
        }
    }
    Some(f)
}

/// An id as `validate::read_jobs` takes it: trimmed, and one the API can take.
fn id(v: Option<&str>) -> Option<&str> {
    let v = v?.trim();
    crate::domain::check_id(v).is_ok().then_some(v)
}

/// A string key's value into its slot, once.
fn put<'a>(slot: &mut Option<&'a str>, v: Value<'a>) -> Option<()> {
    match (slot.is_none(), v) {
        (true, Value::Str(s)) => {
            *slot = Some(s);
            Some(())
        }
        _ => None,
    }
}

impl Lean<'_> {
    /// Every entry as the general path reads it (`validate::read_jobs`), in the file's order,
    /// or `None` when one is outside the shape or wrong in any way. `remediate` gets the
    /// entries' own `remediate`, as there.
    pub(super) fn jobs(
        &self,
        notify: &NotifyConfig,
        poll: &PollConfig,
        remediate: &mut BTreeMap<JobKey, bool>,
    ) -> Option<Vec<Arc<JobConfig>>> {
        let channels = notify.channel_names();
        // The duplicate check on the keys borrowed from the text: no copy, no path per entry.
        let mut seen: HashSet<(&str, &str), IdsHash> =
            HashSet::with_capacity_and_hasher(self.entries.len(), IdsHash);
        let mut jobs = Vec::with_capacity(self.entries.len());
        for body in &self.entries {
            let f = fields(body)?;
            let name = match f.name.map(str::trim) {
                Some(n) if n.is_empty() || n.chars().any(char::is_control) => return None,
                n => n,
            };
            let (app_id, job_id) = (id(f.app_id)?, id(f.job_id)?);
            let kind = match f.kind {
                None => JobKind::default(),
                Some(k) => k.parse().ok()?,
            };
            let interval = match f.interval {
                None => None,
                Some(_) if poll.schedule.is_some() => return None,
                Some(i) => {
                    let i = super::parse_duration(i).ok()?;
                    (MIN_INTERVAL..=MAX_INTERVAL).contains(&i).then_some(i)?;
                    Some(i)
                }
            };
            if let Some(list) = &f.notify {
                let known = |n: &&str| !n.trim().is_empty() && channels.contains(n);
                if !list.iter().all(known) {
                    return None;
                }
            }
            if !seen.insert((app_id, job_id)) {
                return None;
            }
            let key = JobKey::new(app_id, job_id);
            if let Some(on) = f.remediate {
                remediate.insert(key.clone(), on);
            }
            jobs.push(Arc::new(JobConfig {
                account: None,
                key,
                name: name.map(str::to_string),
                kind,
                interval,
                notify: f
                    .notify
                    .map(|l| l.into_iter().map(str::to_string).collect()),
            }));
        }
        Some(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `has_control` (a word at a time) says what a byte at a time says, for every byte at
    /// every place of a word and of the tail after it.
    #[test]
    fn control_characters_are_found_wherever_they_are() {
        for b in 0..=255u8 {
            let want = (b < 0x20 && b != b'\t') || b == 0x7f;
            for len in 1..=17 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let Ok(s) = std::str::from_utf8(&s) else {
                        continue;
                    };
                    assert_eq!(has_control(s), want, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!has_control("a\tb\tc\td\te\tf\tg\th\t"));
    }

    /// Whether a line closes what it opens, by named cases.
    #[test]
    fn closed_lines_table() {
        let cases = [
            ("a key and a string", "a = \"x # y\"\n", true),
            ("an escaped quote", "a = \"x\\\"]\" # [\n", true),
            ("a literal string's backslash", "a = 'x\\' # \"\n", true),
            ("an array on one line", "a = [1, [2], {b = 3}]\r\n", true),
            ("a comment with brackets", "# [x\n", true),
            ("a multi-line basic string", "a = \"\"\"\n", false),
            ("a multi-line literal string", "a = '''x'''\n", false),
            ("an open string", "a = \"x\n", false),
            ("a string ending in a backslash", "a = \"x\\\"\n", false),
            ("an open array", "a = [\n", false),
            ("an open inline table", "a = { b = 1,\n", false),
            ("a bracket closed twice", "a = ]\n", false),
        ];
        for (name, line, want) in cases {
            assert_eq!(closed(line), want, "{name}");
        }
    }

    #[test]
    fn headers_table() {
        let cases = [
            ("an entry", "[[jobs]]\n", Some(Part::Entry)),
            (
                "spaces inside, a comment",
                "[[ jobs ]] # x\r\n",
                Some(Part::Entry),
            ),
            ("a table", "[api]\n", Some(Part::Other)),
            ("a dotted table", "[api.auth]\n", Some(Part::Other)),
            ("another array", "[[notify.webhook]]\n", Some(Part::Other)),
            ("a table named jobs", "[jobs]\n", None),
            ("a table under jobs", "[jobs.x]\n", None),
            ("an array under jobs", "[[jobs.x]]\n", None),
            ("quoted", "[[\"jobs\"]]\n", None),
            ("a key after the entry's header", "[[jobs]] a = 1\n", None),
            (
                "a control character in the comment",
                "[[jobs]] #\u{1}\n",
                None,
            ),
        ];
        for (name, line, want) in cases {
            assert_eq!(header(line), want, "{name}");
        }
    }

    /// An entry's lines: read in the shape, or declined.
    #[test]
    fn entry_lines_table() {
        let every = Fields {
            name: Some(" Lobby "),
            app_id: Some("a"),
            job_id: Some("j"),
            kind: Some("mix"),
            interval: Some("1m"),
            notify: Some(vec!["hook", "mail"]),
            remediate: Some(false),
        };
        let cases: Vec<(&str, &str, Option<Fields<'_>>)> = vec![
            (
                "every key, comments, blank lines, CRLF",
                "# c\nname = \" Lobby \"\r\n\n  app_id='a' # c\njob_id = \"j\"\nkind = \"mix\"\ninterval = \"1m\"\nnotify = [ \"hook\", 'mail', ]\nremediate = false\n",
                Some(every),
            ),
            (
                "an empty list, no line break at the end",
                "notify = []",
                Some(Fields {
                    notify: Some(vec![]),
                    ..Fields::default()
                }),
            ),
            ("an escape", "job_id = \"a\\tb\"\n", None),
            ("a number", "job_id = 7\n", None),
            ("a multi-line string", "job_id = \"\"\"\nj\"\"\"\n", None),
            ("a multi-line list", "notify = [\n\"hook\"]\n", None),
            ("a key twice", "job_id = \"a\"\njob_id = \"b\"\n", None),
            ("an unknown key", "appid = \"a\"\n", None),
            ("a dotted key", "a.b = \"a\"\n", None),
            ("a quoted key", "\"job_id\" = \"a\"\n", None),
            ("a value of another type", "remediate = \"true\"\n", None),
            ("a list of other things", "notify = [true]\n", None),
            ("a string for a list", "notify = \"hook\"\n", None),
            ("something after the value", "job_id = \"a\" \"b\"\n", None),
            ("a word after true", "remediate = truer\n", None),
            ("a control character", "job_id = \"a\u{1}\"\n", None),
            ("a lone carriage return", "job_id = \"a\"\rx = 1\n", None),
            ("a header-like line", "[x]\n", None),
        ];
        for (name, body, want) in cases {
            assert_eq!(fields(body), want, "{name}");
        }
    }

    /// Cut by lines: the entries out, the rest kept in order; a line outside the entries that
    /// might open a value spanning lines, or `jobs` named otherwise, leaves the file whole.
    #[test]
    fn what_is_cut_out_table() {
        type Want = Option<(&'static str, &'static [&'static str])>;
        let cases: &[(&str, &str, Want)] = &[
            (
                "entries between sections",
                "a = 1\n[api]\nx = 2\n[[jobs]]\njob_id = \"j1\"\n\n[[jobs]] # two\njob_id = \"j2\"\n[poll]\ny = 3\n[[jobs]]\njob_id = \"j3\"",
                Some((
                    "a = 1\n[api]\nx = 2\n[poll]\ny = 3\n",
                    &[
                        "job_id = \"j1\"\n\n",
                        "job_id = \"j2\"\n",
                        "job_id = \"j3\"",
                    ],
                )),
            ),
            (
                "a multi-line string in the rest",
                "s = '''\n[[jobs]]\n'''\n[[jobs]]\njob_id = \"j\"\n",
                None,
            ),
            (
                "a multi-line array in the rest",
                "a = [\n[1],\n]\n[[jobs]]\njob_id = \"j\"\n",
                None,
            ),
            (
                "brackets inside an entry, an indented header after it",
                "[[jobs]]\nnotify = [\"a\"] # [x\r\n job_id = \"j\" # a [ b\n\t [poll]\ny = 1\n[[jobs]]\n[[jobs]]\njob_id = 'k'",
                Some((
                    "\t [poll]\ny = 1\n",
                    &[
                        "notify = [\"a\"] # [x\r\n job_id = \"j\" # a [ b\n",
                        "",
                        "job_id = 'k'",
                    ],
                )),
            ),
            ("no entries", "[api]\nx = 1\n", None),
            ("a table named jobs", "[jobs]\nx = 1\n", None),
            (
                "a quoted header",
                "[[jobs]]\njob_id = \"j\"\n[[\"jobs\"]]\njob_id = \"k\"\n",
                None,
            ),
        ];
        for (name, text, want) in cases {
            let got = cut(text).map(|l| (l.rest, l.entries));
            let want = want.map(|(rest, entries)| (rest.to_string(), entries.to_vec()));
            assert_eq!(got, want, "{name}");
        }
    }
}
