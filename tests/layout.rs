//! The layout rules of ARCHITECTURE.md, checked on the source itself so they stay true:
//! no daemon source file over 900 lines before its tests, no long function without a reason
//! beside it, no import cycle between the daemon's top-level modules, and dependencies that
//! point one way along the data path.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 900;
/// "About 80": a function longer than this needs a comment before it that says why (one
/// containing the word "long").
const MAX_FN_LINES: usize = 90;

/// Dependencies point one way along each chain: a module may use those before it, never
/// those after it.
const CHAINS: &[&[&str]] = &[
    &[
        "domain", "config", "detect", "store", "outbox", "poller", "startup", "cli",
    ],
    &["domain", "config", "rules", "store"],
    &["notify", "deliver", "startup"],
    // The status page: the view-model reads the store; the HTTP endpoint renders it.
    &["store", "view", "http", "startup"],
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part of a file before its `#[cfg(test)]` module: what the size rule counts.
fn before_tests(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim_end() != "#[cfg(test)]")
        .collect()
}

/// The library and binary sources of every crate, without the files that hold only a test
/// module (`tests.rs`, `*_tests.rs`): those are tests, whatever their length.
fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for krate in fs::read_dir(root().join("crates")).unwrap().flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    files.retain(|f| {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name != "tests.rs" && !name.ends_with("_tests.rs")
    });
    files.sort();
    files
}

#[test]
fn no_source_file_is_over_900_lines_before_its_tests() {
    let mut over = Vec::new();
    for f in sources() {
        let text = fs::read_to_string(&f).unwrap();
        let n = before_tests(&text).len();
        if n > MAX_FILE_LINES {
            over.push(format!("{} ({n} lines)", f.display()));
        }
    }
    assert!(over.is_empty(), "split these files: {over:#?}");
}

/// Each `fn` in non-test code, with its length in lines, found by rustfmt's layout: the
/// closing brace sits alone at the indentation of the `fn` line.
fn long_functions(lines: &[&str]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
            "const fn ",
            "pub const fn ",
            "unsafe fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let Some(len) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        if len < MAX_FN_LINES {
            continue;
        }
        // The comment block right above the fn (attributes skipped) must say why it is long.
        let reason = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("//") || t.starts_with("#[")
            })
            .any(|l| l.to_ascii_lowercase().contains("long"));
        if !reason {
            found.push((trimmed.chars().take(70).collect(), len + 1));
        }
    }
    found
}

#[test]
fn no_long_function_without_a_reason_beside_it() {
    let mut long = Vec::new();
    for f in sources() {
        let text = fs::read_to_string(&f).unwrap();
        for (name, n) in long_functions(&before_tests(&text)) {
            long.push(format!("{}: {name} ({n} lines)", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these functions, or say beside each why it is long: {long:#?}"
    );
}

/// The top-level module a file of the daemon belongs to (`src/poller/budget.rs` -> poller).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules named after `crate::` in `text`, `use crate::{a, b::c}` included.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        start = true;
                        continue;
                    }
                    _ => {}
                }
                if start && depth == 0 {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                        continue;
                    } else if !name.is_empty() {
                        refs.insert(std::mem::take(&mut name));
                        start = false;
                    }
                }
            }
            if !name.is_empty() {
                refs.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

/// Which top-level module uses which, from non-test code.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(from) = top_module(&f) else {
            continue;
        };
        let text = fs::read_to_string(&f).unwrap();
        // Code only: a doc link to another module is not a dependency.
        let code: Vec<&str> = before_tests(&text)
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let code = code.join("\n");
        let uses = graph.entry(from.clone()).or_default();
        for to in crate_refs(&code) {
            if to != from {
                uses.insert(to);
            }
        }
    }
    graph
}

#[test]
fn the_daemons_modules_have_no_import_cycle() {
    let graph = module_graph();
    // Depth-first search; a grey node met again closes a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            cycles.push(cycle.join(" -> "));
            return;
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            visit(m, graph, path, done, cycles);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn dependencies_point_one_way_along_the_data_path() {
    let graph = module_graph();
    let mut wrong = Vec::new();
    for chain in CHAINS {
        for (i, from) in chain.iter().enumerate() {
            for to in &chain[i + 1..] {
                if graph.get(*from).is_some_and(|uses| uses.contains(*to)) {
                    wrong.push(format!("{from} uses {to}, which comes after it"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn crate_refs_reads_paths_and_groups() {
    let cases = [
        ("plain path", "use crate::store::Store;", vec!["store"]),
        (
            "group",
            "use crate::{domain::{Phase, Rule}, config::Config, store};",
            vec!["config", "domain", "store"],
        ),
        (
            "in an expression",
            "crate::outbox::new(); crate::rules::x",
            vec!["outbox", "rules"],
        ),
        ("none", "use recwatch_rtc::State;", vec![]),
    ];
    for (name, text, want) in cases {
        let got: Vec<String> = crate_refs(text).into_iter().collect();
        assert_eq!(got, want, "{name}");
    }
}
