//! What recwatch ships for Prometheus and Grafana (`contrib/`) stays true to what it exports:
//! every metric the rules and the dashboard name is in the metrics catalogue (so renaming a
//! metric without them fails here), the dashboard is an importable Grafana export, and
//! Prometheus's own `promtool` accepts the rules, their unit tests and every dashboard query.

use recwatch::metric_catalogue::METRICS;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(contrib(path)).unwrap()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/recwatch-dashboard.json")).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

fn dashboard_exprs(d: &Value) -> Vec<String> {
    panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("a target has an expr")
                .to_string()
        })
        .collect()
}

/// The `recwatch_*` and `process_*` names in a text, histogram suffixes folded into their
/// family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["recwatch_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_string();
            out.insert(family);
        }
    }
    out
}

/// The process metrics metrics-process exports (see `metric_catalogue::process`).
const PROCESS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

fn unknown_names(text: &str) -> Vec<String> {
    let known: BTreeSet<&str> = METRICS
        .iter()
        .map(|m| m.name)
        .chain(PROCESS.iter().copied())
        .collect();
    metric_names(text)
        .into_iter()
        .filter(|n| !known.contains(n.as_str()))
        // The rules file's own names and the scrape job's.
        .filter(|n| n != "recwatch_rules" && n != "recwatch_")
        .collect()
}

#[test]
fn the_rules_and_the_dashboard_name_only_exported_metrics() {
    let rules = read("prometheus/recwatch-rules.yml");
    let tests = read("prometheus/recwatch-rules.test.yml");
    let exprs = dashboard_exprs(&dashboard()).join("\n");
    for (what, text) in [
        ("recwatch-rules.yml", &rules),
        ("recwatch-rules.test.yml", &tests),
        ("recwatch-dashboard.json", &exprs),
    ] {
        assert_eq!(
            unknown_names(text),
            Vec::<String>::new(),
            "{what} names metrics recwatch does not export"
        );
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "recwatch_jobs",
        "recwatch_transitions_total",
        "recwatch_alerts_total",
        "recwatch_deliveries_total",
        "recwatch_oldest_pending_delivery_age_seconds",
        "recwatch_poll_duration_seconds",
        "recwatch_rate_budget_demand_ratio",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metric_names(&exprs).contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }
}

#[test]
fn metric_names_reads_names_and_folds_histograms() {
    let got = metric_names(
        "rate(recwatch_poll_duration_seconds_bucket{x=\"y\"}[5m]) / process_open_fds + my_recwatch_x",
    );
    let want: BTreeSet<String> = ["recwatch_poll_duration_seconds", "process_open_fds"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}

/// Importable as Grafana exports are: a schema version, the data source as an input
/// (`${DS_PROMETHEUS}`) used by every panel and query, unique panel ids, a uid and a title.
#[test]
fn the_dashboard_is_an_importable_grafana_export() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert_eq!(d["uid"], "recwatch");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "id twice"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
        let pos = &p["gridPos"];
        assert!(pos["w"].as_u64().is_some_and(|w| (1..=24).contains(&w)));
    }
    for v in d["templating"]["list"].as_array().expect("variables") {
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}");
    }
}

/// `promtool` from Debian's `prometheus` package (`.ci/deps` installs it; `bash .ci/test`, the
/// README's test command, runs it first). Required in CI; elsewhere a missing promtool skips.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI: .ci/deps installs it (Debian package prometheus)"
        );
        eprintln!("skipped: promtool not found (bash .ci/deps installs it)");
        return None;
    }
    Some("promtool")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    let Some(promtool) = promtool() else { return };
    run(Command::new(promtool)
        .args(["check", "rules"])
        .arg(contrib("prometheus/recwatch-rules.yml")));
    run(Command::new(promtool)
        .args(["test", "rules", "recwatch-rules.test.yml"])
        .current_dir(contrib("prometheus")));
}

/// Every dashboard query parses as PromQL: each becomes a recording rule (with Grafana's
/// variables given values) in a file `promtool check rules` reads.
#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(promtool) = promtool() else { return };
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs(&dashboard()).iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$job", "recwatch")
            .replace("$instance", ".+");
        yaml.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, yaml).unwrap();
    run(Command::new(promtool).args(["check", "rules"]).arg(&path));
}
