//! The layout rules of ARCHITECTURE.md, checked on the source itself so they stay true:
//! no daemon source file over 900 lines before its tests, no long function without a reason
//! beside it, no type with more than 30 methods, no import cycle between the daemon's
//! top-level modules, and dependencies that point one way along the data path.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 900;
/// A function longer than this (signature to closing brace) needs a `//` comment right above
/// it that says why (one containing the word "long").
const MAX_FN_LINES: usize = 80;

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
    // A feature's worker runs beside the poller and is started by startup.
    &["store", "outbox", "poller", "remediation", "startup", "cli"],
];

/// The features that have a folder of their own (ARCHITECTURE.md, "A feature in few
/// places"): `src/<feature>/<layer>.rs` is that layer's part of the feature and is placed in
/// the layer for the rules below, so a feature's config file may use `domain` but not
/// `store`, its rules stay pure, and so on; its other files (`mod.rs`, a worker) are the
/// feature's own module.
const FEATURES: &[&str] = &["remediation", "hold"];

/// The layers a feature's file may be named after.
const LAYERS: &[&str] = &[
    "domain", "config", "rules", "store", "outbox", "poller", "deliver", "notify", "view", "http",
    "cli", "startup",
];

/// The module `first::second` counts as: the layer, when `first` is a feature and `second`
/// one of its layer files, else `first`.
fn placed(first: &str, second: Option<&str>) -> String {
    match second {
        Some(layer) if FEATURES.contains(&first) && LAYERS.contains(&layer) => layer.to_string(),
        _ => first.to_string(),
    }
}

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

/// Whether `line` (trimmed) opens a function: any visibility (`pub`, `pub(crate)`,
/// `pub(super)`, `pub(in ...)`), then any of `default`, `const`, `async`, `unsafe`,
/// `extern "C"`, then `fn `. Methods and free functions alike; generics follow the name.
fn opens_fn(trimmed: &str) -> bool {
    let mut rest = trimmed;
    if let Some(r) = rest.strip_prefix("pub") {
        rest = match r.strip_prefix('(') {
            Some(r) => match r.find(')') {
                Some(at) => &r[at + 1..],
                None => return false,
            },
            None => r,
        };
        rest = rest.trim_start();
    }
    loop {
        if rest.starts_with("fn ") {
            return true;
        }
        let qualifier = ["default ", "const ", "async ", "unsafe ", "extern "]
            .iter()
            .find(|q| rest.starts_with(**q));
        let Some(q) = qualifier else {
            return false;
        };
        rest = rest[q.len()..].trim_start();
        // `extern "C" fn`: the ABI string.
        if *q == "extern " && rest.starts_with('"') {
            match rest[1..].find('"') {
                Some(at) => rest = rest[at + 2..].trim_start(),
                None => return false,
            }
        }
    }
}

/// The line at which the item opened at `at` ends: its closing brace alone at the item's
/// indentation (rustfmt's layout), or `at` itself for an item on one line or ending in `;`.
fn item_end(lines: &[&str], at: usize) -> usize {
    let line = lines[at];
    let trimmed = line.trim_start();
    if trimmed.ends_with(';') || trimmed.ends_with('}') {
        return at;
    }
    let close = format!("{}}}", &line[..line.len() - trimmed.len()]);
    lines[at..]
        .iter()
        .position(|l| *l == close || l.starts_with(&format!("{close};")))
        .map_or(lines.len() - 1, |n| at + n)
}

/// What counts as a test, and is not held to the function rule: an item marked
/// `#[cfg(test)]` (a `mod tests`, a helper only tests call) and a function marked `#[test]`
/// or `#[tokio::test]`, wherever they sit in the file. Everything else is production code,
/// `#[cfg(any(test, ...))]` included (it is built into some binary). Files holding only a
/// test module are left out by `sources`.
fn is_test_attribute(trimmed: &str) -> bool {
    trimmed.starts_with("#[cfg(test)]")
        || trimmed.starts_with("#[test]")
        || trimmed.starts_with("#[tokio::test")
}

/// Each production `fn` longer than `MAX_FN_LINES` without a reason beside it, with its
/// length in lines, signature to closing brace.
fn long_functions(lines: &[&str]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if is_test_attribute(trimmed) {
            // Skip the item the attribute marks: past further attributes and comments.
            let mut item = i + 1;
            while item < lines.len() && {
                let t = lines[item].trim_start();
                t.starts_with("#[") || t.starts_with("//")
            } {
                item += 1;
            }
            i = item_end(lines, item.min(lines.len() - 1)) + 1;
            continue;
        }
        if !opens_fn(trimmed) {
            i += 1;
            continue;
        }
        // A declaration without a body (a trait's, an extern block's) has no length.
        let signature_end = lines[i..].iter().position(|l| {
            let t = l.trim_end();
            t.ends_with('{') || t.ends_with(';') || t.ends_with('}')
        });
        if signature_end.is_none_or(|n| lines[i + n].trim_end().ends_with(';')) {
            i += 1;
            continue;
        }
        let end = item_end(lines, i);
        let len = end - i + 1;
        // The comment block right above the fn (attributes skipped) must say why it is long.
        let reason = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("//") || t.starts_with("#[")
            })
            .any(|l| l.to_ascii_lowercase().contains("long"));
        if len > MAX_FN_LINES && !reason {
            found.push((trimmed.chars().take(70).collect(), len));
        }
        // Functions nested in this one are inside its count already.
        i += 1;
    }
    found
}

#[test]
fn no_long_function_without_a_reason_beside_it() {
    let mut long = Vec::new();
    for f in sources() {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (name, n) in long_functions(&lines) {
            long.push(format!("{}: {name} ({n} lines)", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these functions, or say beside each why it is long: {long:#?}"
    );
}

/// A function of `n` lines with the given signature and comment above it.
fn function_of(comment: &str, signature: &str, n: usize) -> String {
    let mut text = format!("{comment}\n{signature} {{\n");
    for k in 0..n - 2 {
        text.push_str(&format!("        let x{k} = {k};\n"));
    }
    text.push_str("    }\n");
    text
}

#[test]
fn the_function_rule_counts_every_fn_and_skips_tests() {
    let cases = [
        ("80 lines pass", "", "    fn f()", 80, false),
        ("81 lines fail", "", "    fn f()", 81, true),
        ("pub(super) counts", "", "    pub(super) fn f()", 81, true),
        (
            "pub(in path) counts",
            "",
            "    pub(in crate::a) async fn f()",
            81,
            true,
        ),
        (
            "const unsafe counts",
            "",
            "    pub const unsafe fn f()",
            81,
            true,
        ),
        (
            "generic counts",
            "",
            "    pub(crate) async fn f<T: Clone>(t: T)",
            81,
            true,
        ),
        (
            "extern counts",
            "",
            r#"    pub unsafe extern "C" fn f()"#,
            81,
            true,
        ),
        (
            "a reason",
            "    // long: a table of cases",
            "    fn f()",
            81,
            false,
        ),
        ("a test", "    #[test]", "    fn f()", 120, false),
        (
            "a tokio test",
            "    #[tokio::test(start_paused = true)]",
            "    async fn f()",
            120,
            false,
        ),
        (
            "a test helper",
            "    #[cfg(test)]",
            "    fn f()",
            120,
            false,
        ),
    ];
    for (name, comment, signature, n, flagged) in cases {
        let text = function_of(comment, signature, n);
        let lines: Vec<&str> = text.lines().collect();
        let found = long_functions(&lines);
        assert_eq!(!found.is_empty(), flagged, "{name}: {found:?}");
        if flagged {
            assert_eq!(found[0].1, n, "{name}");
        }
    }
    // Production code after a test item is still read.
    let text = format!(
        "#[cfg(test)]\nmod tests {{\n    fn t() {{}}\n}}\n{}",
        function_of("", "fn after()", 81)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(long_functions(&lines).len(), 1, "code after a test module");
}

/// At most this many methods per type (every impl block in `src/` and `crates/*/src/`, trait
/// impls included): a type that keeps growing is a feature's surface that wants a part of its
/// own (issue 24: `Store` had 95).
const MAX_METHODS: usize = 30;

/// The type an `impl` line is for (its last path segment, generics dropped), or None if
/// `trimmed` opens no impl: `impl<'a> Trait for a::Type<'a> where ... {` -> `Type`.
fn impl_type(trimmed: &str) -> Option<String> {
    let rest = trimmed
        .strip_prefix("unsafe ")
        .unwrap_or(trimmed)
        .strip_prefix("impl")?;
    // The impl's own generics, balanced (a bound may hold `<...>` too).
    let rest = if let Some(r) = rest.strip_prefix('<') {
        let mut depth = 1;
        let at = r.char_indices().find_map(|(i, c)| {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(i)
        })?;
        &r[at + 1..]
    } else {
        rest.strip_prefix(' ')?
    };
    let rest = rest.trim_start();
    let ty = rest.split(" for ").nth(1).unwrap_or(rest).trim_start();
    let ty = ty.trim_start_matches('&').trim_start_matches("mut ");
    let path = ty
        .split(|c: char| c == '<' || c == '{' || c.is_whitespace())
        .next()?;
    let name = path.rsplit("::").next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Methods per type name in `lines`: each `fn` directly inside a production `impl` block.
fn methods_per_type(lines: &[&str], counts: &mut BTreeMap<String, usize>) {
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if is_test_attribute(trimmed) {
            let mut item = i + 1;
            while item < lines.len() && {
                let t = lines[item].trim_start();
                t.starts_with("#[") || t.starts_with("//")
            } {
                item += 1;
            }
            i = item_end(lines, item.min(lines.len() - 1)) + 1;
            continue;
        }
        let Some(ty) = impl_type(trimmed) else {
            i += 1;
            continue;
        };
        // The block opens on the line ending in `{` (a `where` clause may come first).
        let Some(open) = lines[i..].iter().position(|l| {
            let t = l.trim_end();
            t.ends_with('{') || t.ends_with('}') || t.ends_with(';')
        }) else {
            break;
        };
        let indent = lines[i].len() - trimmed.len();
        let end = item_end(lines, i);
        let inner = " ".repeat(indent + 4);
        let n = lines[i + open + 1..end.max(i + open + 1)]
            .iter()
            .filter(|l| {
                l.strip_prefix(&inner)
                    .is_some_and(|t| !t.starts_with(' ') && opens_fn(t))
            })
            .count();
        *counts.entry(ty).or_default() += n;
        i = end + 1;
    }
}

/// Where a source file's types live, for telling apart two types of one name: the crate's
/// top-level module (`src/deliver/lane.rs` -> `deliver`, `crates/recwatch-rtc/src/client.rs`
/// -> `recwatch-rtc::client`).
fn home(file: &Path) -> String {
    let (base, prefix) = match file.strip_prefix(root().join("src")) {
        Ok(rel) => (rel, String::new()),
        Err(_) => {
            let rel = file.strip_prefix(root().join("crates")).unwrap();
            let krate = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let rest = rel.strip_prefix(format!("{krate}/src")).unwrap();
            (rest, format!("{krate}::"))
        }
    };
    let first = base
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    format!("{prefix}{}", first.trim_end_matches(".rs"))
}

/// The names of the structs, enums and unions a file defines.
fn defined_types(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut t = line.trim_start();
        if let Some(r) = t.strip_prefix("pub") {
            t = match r.strip_prefix('(') {
                Some(r) => r.split_once(')').map_or("", |(_, after)| after),
                None => r,
            }
            .trim_start();
        }
        for kw in ["struct ", "enum ", "union "] {
            if let Some(r) = t.strip_prefix(kw) {
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    names
}

/// Methods per type across `sources()`, keyed `home::Name`: an impl counts for the type of
/// that name defined in its own home, else for the one home defining it (an impl of a
/// trait elsewhere, as `leader`'s `LeaseDb for Store`), else under the bare name.
fn methods_per_home_type() -> BTreeMap<String, usize> {
    let files: Vec<(String, String)> = sources()
        .into_iter()
        .map(|f| (home(&f), fs::read_to_string(&f).unwrap()))
        .collect();
    let mut homes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (home, text) in &files {
        for name in defined_types(text) {
            homes.entry(name).or_default().insert(home.clone());
        }
    }
    let mut counts = BTreeMap::new();
    for (home, text) in &files {
        let lines: Vec<&str> = text.lines().collect();
        let mut here = BTreeMap::new();
        methods_per_type(&lines, &mut here);
        for (name, n) in here {
            let owner = match homes.get(&name) {
                Some(h) if h.contains(home) => format!("{home}::{name}"),
                Some(h) if h.len() == 1 => format!("{}::{name}", h.first().unwrap()),
                _ => name,
            };
            *counts.entry(owner).or_default() += n;
        }
    }
    counts
}

#[test]
fn no_type_has_more_than_30_methods() {
    let counts = methods_per_home_type();
    assert!(
        counts.get("store::Store").is_some_and(|n| *n > 0),
        "the count finds Store's methods: {counts:#?}"
    );
    let over: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > MAX_METHODS)
        .map(|(ty, n)| format!("{ty}: {n} methods"))
        .collect();
    assert!(
        over.is_empty(),
        "split these types into parts (views by aggregate, as src/store/ does): {over:#?}"
    );
}

#[test]
fn the_method_rule_counts_across_blocks_and_trait_impls() {
    let text = "impl Store {
    pub async fn a(&self) {}
    fn b(&self) -> u8 {
        fn nested() {}
        1
    }
}
impl<'a> crate::x::Trait<'a> for super::Store where Self: Sized {
    fn c(&self) {}
}
impl<T: Into<String>> Other<T> {
    pub(crate) const fn d() {}
}
#[cfg(test)]
impl Store {
    fn only_in_tests(&self) {}
}
";
    let lines: Vec<&str> = text.lines().collect();
    let mut counts = BTreeMap::new();
    methods_per_type(&lines, &mut counts);
    let want: BTreeMap<String, usize> = [("Store".to_string(), 3), ("Other".to_string(), 1)]
        .into_iter()
        .collect();
    assert_eq!(counts, want);
    assert_eq!(
        impl_type("impl fmt::Display for &Phase {"),
        Some("Phase".into())
    );
    assert_eq!(impl_type("implement {"), None);
}

/// The top-level module a file of the daemon belongs to (`src/poller/budget.rs` -> poller).
/// A feature's layer file counts as that layer (`src/remediation/config.rs` -> config).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_str().unwrap_or(""));
    let name = parts.next()?.trim_end_matches(".rs");
    let second = parts.next().map(|p| p.trim_end_matches(".rs"));
    (!matches!(name, "lib" | "main")).then(|| placed(name, second))
}

/// The items of a `{...}` group at `text`'s start, split at its top-level commas (the text
/// after the closing brace is ignored).
fn group_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&text[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect()
}

/// The identifier at `text`'s start and what follows it.
fn ident(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// The modules a path (or group of paths) right after `crate::` names, each placed by
/// [`placed`]: `remediation::{config::X, rules}` names config and rules.
fn refs_of(text: &str, refs: &mut BTreeSet<String>) {
    if text.starts_with('{') {
        for item in group_items(text) {
            refs_of(item, refs);
        }
        return;
    }
    let (first, rest) = ident(text);
    if first.is_empty() {
        return;
    }
    let after = rest.strip_prefix("::").unwrap_or("");
    let seconds: Vec<&str> = if after.starts_with('{') {
        group_items(after).into_iter().map(|i| ident(i).0).collect()
    } else {
        vec![ident(after).0]
    };
    for second in seconds {
        refs.insert(placed(first, Some(second).filter(|s| !s.is_empty())));
    }
}

/// The top-level modules named after `crate::` in `text`, `use crate::{a, b::c}` included; a
/// feature's layer file counts as its layer.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        refs_of(rest, &mut refs);
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

/// A feature's files name one another by `crate::<feature>::...`: a `super::` path would hide
/// a dependency from the layer rules (`remediation/domain.rs` using the worker, say).
#[test]
fn a_features_files_name_each_other_by_crate_paths() {
    let mut found = Vec::new();
    for feature in FEATURES {
        let mut files = Vec::new();
        rust_files(&root().join("src").join(feature), &mut files);
        assert!(!files.is_empty(), "src/{feature}/ is listed in FEATURES");
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for (n, line) in before_tests(&text).iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("super::") {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "write these as crate:: paths: {found:#?}");
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
        (
            "a feature's layer file is its layer",
            "use crate::remediation::config::RemediateConfig;",
            vec!["config"],
        ),
        (
            "a feature's own module",
            "crate::remediation::Remediator::new()",
            vec!["remediation"],
        ),
        (
            "a feature's group",
            "use crate::remediation::{domain::RemediationState, rules, worker};",
            vec!["domain", "remediation", "rules"],
        ),
        (
            "a feature in a group",
            "use crate::{remediation::outbox::Decided, store::{A, B}};",
            vec!["outbox", "store"],
        ),
    ];
    for (name, text, want) in cases {
        let got: Vec<String> = crate_refs(text).into_iter().collect();
        assert_eq!(got, want, "{name}");
    }
}
