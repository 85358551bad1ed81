//! Every metric the daemon records is in the metrics catalogue (`src/metric_catalogue.rs`)
//! with the same type, so it has HELP and TYPE on `/metrics`; and every metric listed there is
//! recorded somewhere. Checked on the source, so a metric added without its catalogue line
//! fails here, not in a user's `promtool check metrics`.

use recwatch::metric_catalogue::{METRICS, Metric};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A recording macro's first argument: `Some(name)` for a string literal, `None` otherwise.
#[derive(Debug, PartialEq)]
struct Use {
    kind: &'static str,
    name: Option<String>,
}

/// The `counter!(` / `gauge!(` / `histogram!(` calls in `text` (not `describe_*!`).
fn uses(text: &str) -> Vec<Use> {
    let mut out = Vec::new();
    for kind in ["counter", "gauge", "histogram"] {
        let needle = format!("{kind}!(");
        let mut from = 0;
        while let Some(at) = text[from..].find(&needle) {
            let start = from + at;
            from = start + needle.len();
            if text[..start].ends_with("describe_") {
                continue;
            }
            let rest = text[from..].trim_start();
            let name = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(n, _)| n.to_string());
            out.push(Use { kind, name });
        }
    }
    out
}

#[test]
fn every_recorded_metric_is_in_the_catalogue_and_every_listed_one_is_recorded() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let listed: BTreeMap<&str, &Metric> = METRICS.iter().map(|m| (m.name, m)).collect();
    let mut recorded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        let text = fs::read_to_string(f).unwrap();
        for u in uses(&text) {
            let Some(name) = u.name else {
                // The catalogue itself records from its own tables.
                if !rel.ends_with("metric_catalogue.rs") {
                    wrong.push(format!(
                        "{rel}: {}! with a name that is not a string literal; write the name out so this test can check it",
                        u.kind
                    ));
                }
                continue;
            };
            if name.starts_with("process_") {
                // metrics-process's own (it describes them), set by the catalogue only.
                continue;
            }
            match listed.get(name.as_str()) {
                None => wrong.push(format!(
                    "{rel}: {}!(\"{name}\") is not in METRICS (src/metric_catalogue.rs): add it there with its help text",
                    u.kind
                )),
                Some(m) if m.kind.macro_name() != u.kind => wrong.push(format!(
                    "{rel}: {name} is recorded with {}! but listed as a {:?}",
                    u.kind, m.kind
                )),
                Some(_) => {}
            }
            recorded.entry(name).or_default().push(rel.clone());
        }
    }
    for m in METRICS {
        if !recorded.contains_key(m.name) {
            wrong.push(format!(
                "{} is listed in METRICS but nothing records it",
                m.name
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn uses_finds_literal_and_other_names() {
    let text = r#"
        metrics::counter!("recwatch_a_total", "x" => y).increment(1);
        metrics::describe_counter!("recwatch_a_total", "help");
        metrics::gauge!(
            "recwatch_b",
        ).set(1.0);
        metrics::histogram!(name).record(1.0);
    "#;
    let got = uses(text);
    assert_eq!(
        got,
        vec![
            Use {
                kind: "counter",
                name: Some("recwatch_a_total".into())
            },
            Use {
                kind: "gauge",
                name: Some("recwatch_b".into())
            },
            Use {
                kind: "histogram",
                name: None
            },
        ]
    );
}
