//! The file's `[[jobs]]` entries cut out of its text, so that a watch list of 100,000 jobs is
//! parsed once, a run of entries at a time, instead of as one TOML tree layered by the
//! `config` crate and copied into a second (issue 23: 2.4 KB an entry at start-up's peak and
//! ~0.9 s at 100,000). Everything else in the file (the sections, small) is layered under the
//! environment as before.
//!
//! Only a document whose `[[jobs]]` entries can be cut out without changing what it means is
//! cut: each entry runs from its header's line to the next header's, and a header that names
//! `jobs` in any other way (`[jobs]`, `[jobs.x]`, `[["jobs"]]`) leaves the whole file to the
//! one-tree path ([`split`] answers `None`). The caller goes back to that path on any error
//! too, so what an operator is told about a broken file (its line, its masked secrets) is
//! what the one-tree parse says.

use super::ConfigError;
use serde_json::{Map, Value};
use toml_parser::lexer::TokenKind;

/// How many entries are parsed at once: a run's TOML tree lives only while its entries are
/// read (~2.5 MB at this size), and a parse call per entry would cost more than the entries.
const RUN: usize = 1024;

/// The file as two parts: its text without the `[[jobs]]` entries, and the entries.
pub(super) struct Split<'a> {
    /// Every line outside a `[[jobs]]` entry, in the file's order.
    pub(super) rest: String,
    /// Consecutive entries, at most [`RUN`] to a slice of the file's text.
    runs: Vec<&'a str>,
    /// How many entries in all.
    pub(super) count: usize,
}

/// Where `[[jobs]]` are read from: the tree (the whole file, or no entries), the runs
/// `split` cut out, or `lean`'s lines, read by the caller after the rest (`load::lean_beside`:
/// the configuration comes back without its jobs).
#[derive(Clone, Copy)]
pub(super) enum Entries<'s, 'a> {
    InTree,
    Split(&'s Split<'a>),
    Later,
}

/// What one header line starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Entry,
    Other,
}

/// Cuts `text` at its headers, or `None` when its `[[jobs]]` cannot be cut out safely (see
/// the module's paragraph) or it has none (nothing to gain). A syntax error is not looked
/// for here: a part that does not parse sends the caller back to the whole text.
pub(super) fn split(text: &str) -> Option<Split<'_>> {
    let parts = headers(text)?;
    let count = parts.iter().filter(|(_, p)| *p == Part::Entry).count();
    if count == 0 {
        return None;
    }
    let mut rest = String::new();
    let mut runs = Vec::new();
    // (where the current run started, its entries so far)
    let mut run: Option<(usize, usize)> = None;
    let ends = parts.iter().skip(1).map(|(at, _)| *at).chain([text.len()]);
    for ((start, part), end) in parts.iter().copied().zip(ends) {
        match part {
            Part::Other => {
                if let Some((from, _)) = run.take() {
                    runs.push(&text[from..start]);
                }
                rest.push_str(&text[start..end]);
            }
            Part::Entry => match &mut run {
                Some((from, n)) if *n == RUN => {
                    runs.push(&text[*from..start]);
                    run = Some((start, 1));
                }
                Some((_, n)) => *n += 1,
                None => run = Some((start, 1)),
            },
        }
    }
    if let Some((from, _)) = run {
        runs.push(&text[from..]);
    }
    Some(Split { rest, runs, count })
}

/// Where each part of `text` starts (the first part at 0, before any header, is `Other`) and
/// what it is; `None` for a header naming `jobs` other than as `[[jobs]]`. The lexer is the
/// TOML parser's own, so a `[` inside a string is never taken for a header; one inside an
/// array or inline table that spans lines neither (`depth`).
fn headers(text: &str) -> Option<Vec<(usize, Part)>> {
    let source = toml_parser::Source::new(text);
    let mut parts = vec![(0, Part::Other)];
    let mut depth = 0usize;
    let mut line_start = 0;
    // Only whitespace so far on this line.
    let mut at_start = true;
    // The header being read: its tokens other than whitespace.
    let mut header: Option<Vec<(TokenKind, &str)>> = None;
    for token in source.lex() {
        let kind = token.kind();
        let span = token.span();
        match kind {
            TokenKind::Newline | TokenKind::Eof | TokenKind::Comment => {
                if let Some(h) = header.take() {
                    parts.push((line_start, classify(&h)?));
                }
                if kind == TokenKind::Newline {
                    line_start = span.end();
                    at_start = true;
                }
                continue;
            }
            TokenKind::Whitespace => continue,
            _ => {}
        }
        if let Some(h) = &mut header {
            h.push((kind, &text[span.start()..span.end()]));
            continue;
        }
        match kind {
            TokenKind::LeftSquareBracket if at_start && depth == 0 => {
                header = Some(vec![(kind, "[")]);
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1)
            }
            _ => {}
        }
        at_start = false;
    }
    Some(parts)
}

/// A header's tokens (whitespace left out): an entry of `[[jobs]]`, another table, or `None`
/// when it names `jobs` otherwise (or starts with a quoted key, which might).
fn classify(header: &[(TokenKind, &str)]) -> Option<Part> {
    use TokenKind::{Atom, LeftSquareBracket as L, RightSquareBracket as R};
    let first_key = header.iter().find(|(k, _)| *k != L)?;
    match header {
        [(L, _), (L, _), (Atom, "jobs"), (R, _), (R, _)] => Some(Part::Entry),
        _ if first_key.0 == Atom && first_key.1 != "jobs" => Some(Part::Other),
        _ => None,
    }
}

impl Split<'_> {
    /// The entries, each as the table the one-tree path would have read (see [`json`]), one
    /// run parsed at a time. An error is a run that does not parse on its own.
    pub(super) fn entries(&self) -> impl Iterator<Item = Result<Map<String, Value>, ConfigError>> {
        let mut runs = self.runs.iter();
        let mut current = Vec::new().into_iter();
        std::iter::from_fn(move || {
            loop {
                if let Some(entry) = current.next() {
                    return Some(Ok(entry));
                }
                match parse_run(runs.next()?) {
                    Ok(entries) => current = entries.into_iter(),
                    Err(e) => return Some(Err(e)),
                }
            }
        })
    }
}

/// One run's entries as JSON tables.
fn parse_run(run: &str) -> Result<Vec<Map<String, Value>>, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Run {
        jobs: Vec<toml::Table>,
    }
    let run: Run = toml::from_str(run).map_err(|e| ConfigError::new("TOML", e.message()))?;
    Ok(run
        .jobs
        .into_iter()
        .map(|t| t.into_iter().map(|(k, v)| (k, json(v))).collect())
        .collect())
}

/// A TOML value as the `config` crate hands it on through `try_deserialize`: a date-time as
/// its text, a float that JSON cannot hold as null.
fn json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(json).collect()),
        toml::Value::Table(t) => Value::Object(t.into_iter().map(|(k, v)| (k, json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rest's text and the entries' job ids, or `None` for a text left whole.
    fn cut(text: &str) -> Option<(String, Vec<String>)> {
        let s = split(text)?;
        let ids = s
            .entries()
            .map(|e| e.unwrap()["job_id"].as_str().unwrap().to_string())
            .collect();
        Some((s.rest, ids))
    }

    #[test]
    fn what_is_cut_out_table() {
        type Want = Option<(&'static str, &'static [&'static str])>;
        let cases: &[(&str, &str, Want)] = &[
            (
                "entries between sections, a comment after a header",
                "a = 1\n[api]\nx = 2\n[[jobs]]\njob_id = \"j1\"\n\n[[jobs]] # two\njob_id = \"j2\"\n[poll]\ny = 3\n[[jobs]]\njob_id = \"j3\"",
                Some(("a = 1\n[api]\nx = 2\n[poll]\ny = 3\n", &["j1", "j2", "j3"])),
            ),
            (
                "indented headers, spaces inside, CRLF",
                "[api]\r\n  [[ jobs ]]\r\njob_id = \"j1\"\r\n\t[http]\r\n",
                Some(("[api]\r\n\t[http]\r\n", &["j1"])),
            ),
            (
                "a header inside a multi-line string is the string's",
                "s = '''\n[[jobs]]\n'''\nt = \"\"\"\n[x]\n\"\"\"\n[[jobs]]\njob_id = \"j\"\n",
                Some(("s = '''\n[[jobs]]\n'''\nt = \"\"\"\n[x]\n\"\"\"\n", &["j"])),
            ),
            (
                "a bracket starting a line inside an array or inline table is a value",
                "a = [\n[1],\n]\nb = {\nc = [\n[2]]}\n[[jobs]]\njob_id = \"j\"\n",
                Some(("a = [\n[1],\n]\nb = {\nc = [\n[2]]}\n", &["j"])),
            ),
            ("no entries: nothing to cut", "[api]\nx = 1\n", None),
            ("a table named jobs", "[jobs]\nx = 1\n", None),
            (
                "a table under an entry",
                "[[jobs]]\njob_id = \"j\"\n[jobs.x]\n",
                None,
            ),
            (
                "a quoted header might be jobs",
                "[[jobs]]\njob_id = \"j\"\n[[\"jobs\"]]\njob_id = \"k\"\n",
                None,
            ),
        ];
        for (name, text, want) in cases {
            let got = cut(text);
            let want = want.map(|(rest, ids)| {
                let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
                (rest.to_string(), ids)
            });
            assert_eq!(got, want, "{name}");
        }
    }

    /// More entries than a run: every entry once, in order, a run at a time.
    #[test]
    fn entries_come_a_run_at_a_time_in_order() {
        let n = 2 * RUN + 5;
        let text: String = (0..n)
            .map(|i| format!("[[jobs]]\njob_id = \"j{i}\"\n"))
            .collect();
        let s = split(&text).unwrap();
        assert_eq!(s.count, n);
        assert_eq!(s.runs.len(), 3);
        let ids: Vec<String> = s
            .entries()
            .map(|e| e.unwrap()["job_id"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
        assert_eq!(ids, want);
    }

    /// Values as the `config` crate hands them on: a date-time as its text, integers and
    /// floats as numbers, a float JSON cannot hold as null; a run that does not parse is an
    /// error (the caller reads the whole file then).
    #[test]
    fn values_read_as_the_config_crate_reads_them() {
        let text = "[[jobs]]\nd = 1979-05-27T07:32:00Z\ni = -3\nf = 1.5\nn = nan\nl = [\"a\", 1]\nt = { k = true }\n";
        let e = split(text).unwrap().entries().next().unwrap().unwrap();
        assert_eq!(e["d"], "1979-05-27T07:32:00Z");
        assert_eq!(e["i"], -3);
        assert_eq!(e["f"], 1.5);
        assert_eq!(e["n"], Value::Null);
        assert_eq!(e["l"], serde_json::json!(["a", 1]));
        assert_eq!(e["t"], serde_json::json!({"k": true}));
        let broken = split("[[jobs]]\njob_id = \"j\n").unwrap();
        assert!(broken.entries().next().unwrap().is_err());
    }
}
