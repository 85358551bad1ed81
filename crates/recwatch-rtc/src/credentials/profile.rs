//! The SDK's credentials file, read as Python's `configparser` reads it for
//! `ProfileCredentialProvider`: `[section]` headers, `key = value` or `key: value`, whole-line
//! comments (`#`, `;`), keys case-insensitive, values trimmed, `[DEFAULT]`'s keys in every
//! section. Twenty lines, not a crate.
//!
//! The file holds secret keys, so no error here ever quotes a line: they name the line number.

use std::collections::BTreeMap;

/// The section the SDK reads for project-scoped ("basic") credentials.
pub const SECTION: &str = "basic";

/// One section's keys (lower-case) and values.
pub type Section = BTreeMap<String, String>;

/// Every section of `text`, `[DEFAULT]`'s keys merged into each (as `configparser.items`
/// gives them); an error names the line, never its text.
pub fn parse(text: &str) -> Result<BTreeMap<String, Section>, String> {
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    let mut defaults = Section::new();
    let mut current: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            return Err(format!(
                "line {n} is indented (a value continued on the next line): write each key on one line"
            ));
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            if name != "DEFAULT" && sections.contains_key(&name) {
                return Err(format!("line {n}: section [{name}] appears twice"));
            }
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(format!("line {n} is neither [section] nor key = value"));
        };
        let key = line[..at].trim().to_lowercase();
        let value = line[at + 1..].trim().to_string();
        let into = match current.as_deref() {
            None => return Err(format!("line {n}: a key before any [section]")),
            Some("DEFAULT") => &mut defaults,
            Some(name) => sections.get_mut(name).expect("entered above"),
        };
        if key.is_empty() {
            return Err(format!("line {n}: a value without a key"));
        }
        if into.insert(key.clone(), value).is_some() {
            return Err(format!("line {n}: {key} is set twice in its section"));
        }
    }
    sections.remove("DEFAULT");
    for section in sections.values_mut() {
        for (k, v) in &defaults {
            section.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_table() {
        // (name, text, the basic section's keys as "k=v" joined by ",", or the error's start)
        let cases: &[(&str, &str, Result<&str, &str>)] = &[
            (
                "the SDK's example",
                "[basic]\nak = AK1\nsk = SK1\nproject_id = p1\n\n[global]\nak = AK2\nsk = SK2\ndomain_id = d\n",
                Ok("ak=AK1,project_id=p1,sk=SK1"),
            ),
            (
                "colons, comments, spaces, upper-case keys",
                "# made by hand\n; another comment\n[basic]\nAK: AK1\n  \nSK=SK1\nsecurity_token = a=b:c\n",
                Ok("ak=AK1,security_token=a=b:c,sk=SK1"),
            ),
            (
                "DEFAULT's keys reach every section",
                "[DEFAULT]\nproject_id = p0\n[basic]\nak = AK1\nsk = SK1\n",
                Ok("ak=AK1,project_id=p0,sk=SK1"),
            ),
            (
                "a section's own key wins over DEFAULT's",
                "[basic]\nproject_id = p1\n[DEFAULT]\nproject_id = p0\n",
                Ok("project_id=p1"),
            ),
            ("an empty value is kept empty", "[basic]\nak =\n", Ok("ak=")),
            (
                "CRLF line ends",
                "[basic]\r\nak = AK1\r\nsk = SK1\r\n",
                Ok("ak=AK1,sk=SK1"),
            ),
            (
                "a key before any section",
                "ak = AK1\n",
                Err("line 1: a key"),
            ),
            (
                "a line that is nothing",
                "[basic]\nak AK1\n",
                Err("line 2 is neither"),
            ),
            (
                "a key twice",
                "[basic]\nak = 1\nAK = 2\n",
                Err("line 3: ak is set twice"),
            ),
            (
                "a section twice",
                "[basic]\n[basic]\n",
                Err("line 2: section [basic] appears twice"),
            ),
            (
                "a continued value",
                "[basic]\nak = AK1\n  more\n",
                Err("line 3 is indented"),
            ),
        ];
        for (name, text, want) in cases {
            let got = parse(text).map(|s| {
                s.get(SECTION)
                    .map(|b| {
                        b.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            });
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{name}"),
                (Err(e), Err(want)) => assert!(e.starts_with(want), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn errors_never_quote_the_file() {
        let secret = "hunter2-the-secret";
        for text in [
            format!("sk = {secret}\n"),
            format!("[basic]\n{secret}\n"),
            format!("[basic]\nsk = {secret}\nsk = {secret}\n"),
            format!("[basic]\nsk = x\n  {secret}\n"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
