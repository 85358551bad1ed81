//! `/metrics` as Prometheus users see it: every family with HELP and TYPE, `_total` only on
//! counters, and the series alert rules are written against present at 0 from the first
//! scrape (`.ci/run` also runs Prometheus's own `promtool check metrics` on a live scrape).

use crate::harness::*;
use std::collections::{BTreeMap, BTreeSet};

/// The checks of `promtool check metrics` that a text can fail by how recwatch names and
/// describes its metrics: a family without HELP or TYPE, a sample of no declared family, a
/// counter without `_total` or `_total` on anything else. Empty when clean.
pub fn lint(text: &str) -> Vec<String> {
    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut sampled = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if text.trim().is_empty() {
                out.push(format!("{name}: empty help text"));
            }
            help.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            if !types.contains_key(family) {
                out.push(format!("{name}: a sample without # TYPE"));
            }
            sampled.insert(family.to_string());
        }
    }
    for (name, kind) in &types {
        if !help.contains(name) {
            out.push(format!("{name}: no help text"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            out.push(format!("{name}: a counter without _total"));
        }
        if kind != "counter" && name.ends_with("_total") {
            out.push(format!(
                "{name}: non-counter metrics should not have \"_total\""
            ));
        }
    }
    out
}

#[test]
fn lint_finds_what_promtool_finds() {
    let cases = [
        (
            "clean",
            "# HELP a_total x\n# TYPE a_total counter\na_total 0\n",
            vec![],
        ),
        (
            "no help",
            "# TYPE a_total counter\na_total 0\n",
            vec!["a_total: no help text"],
        ),
        (
            "gauge with _total",
            "# HELP b_total x\n# TYPE b_total gauge\nb_total 1\n",
            vec!["b_total: non-counter metrics should not have \"_total\""],
        ),
        (
            "counter without _total",
            "# HELP c x\n# TYPE c counter\nc 1\n",
            vec!["c: a counter without _total"],
        ),
        (
            "histogram parts belong to their family",
            "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\n",
            vec![],
        ),
        ("no type", "d 1\n", vec!["d: a sample without # TYPE"]),
    ];
    for (name, text, want) in cases {
        assert_eq!(lint(text), want, "{name}");
    }
}

/// The value of the sample written exactly as `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_is_clean_and_has_every_known_series_at_zero() {
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    // A channel whose deliveries would all fail; nothing is delivered here (the job stays
    // RUNNING), so its series are at 0 only because they were created ahead.
    cfg.extra =
        "\n[[notify.webhook]]\nname = \"ops-hook\"\nurl = \"http://127.0.0.1:9/never\"\n".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    let mut zero = vec![
        "recwatch_throttled_total{account=\"default\"}".to_string(),
        "recwatch_polls_total{account=\"default\",outcome=\"throttled\"}".into(),
        "recwatch_polls_total{account=\"default\",outcome=\"unauthorized\"}".into(),
        "recwatch_transitions_total{to_state=\"other\"}".into(),
        "recwatch_callbacks_total{result=\"forged\"}".into(),
        "recwatch_task_panics_total{task=\"writer\"}".into(),
        "recwatch_deliveries_dead{channel=\"ops-hook\"}".into(),
    ];
    for outcome in ["sent", "retry", "dead"] {
        zero.push(format!(
            "recwatch_deliveries_total{{channel=\"ops-hook\",kind=\"webhook\",outcome=\"{outcome}\"}}"
        ));
    }
    for rule in recwatch::domain::Rule::ALL {
        for severity in ["critical", "warning", "info"] {
            zero.push(format!(
                "recwatch_alerts_total{{rule=\"{}\",severity=\"{severity}\"}}",
                rule.as_str()
            ));
        }
    }
    for series in &zero {
        assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
    }
    let version = env!("CARGO_PKG_VERSION");
    let build = text
        .lines()
        .find(|l| l.starts_with("recwatch_build_info{"))
        .unwrap_or_else(|| panic!("no recwatch_build_info in\n{text}"));
    assert!(
        build.starts_with(&format!(
            "recwatch_build_info{{version=\"{version}\",commit=\""
        )) && build.ends_with("} 1"),
        "{build}"
    );
    assert!(
        value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        value(&text, "process_start_time_seconds").is_some_and(|v| v > 1.7e9),
        "{text}"
    );
    assert!(value(&text, "process_open_fds").is_some_and(|v| v > 0.0));
    assert_eq!(
        value(&text, "recwatch_api_rate_limit{account=\"default\"}"),
        Some(50.0)
    );
    assert!(
        !text.contains("recwatch_rate_budget_wait_seconds_total"),
        "the gauge with a counter's name is gone"
    );

    // Once the job is polled: still clean, and the readiness gauges agree with /readyz.
    app.wait_running(1).await;
    wait_for("recwatch_ready 1", T, || async {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (value(&text, "recwatch_ready") == Some(1.0)).then_some(text)
    })
    .await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    assert_eq!(value(&text, "recwatch_database_writable"), Some(1.0));
    assert!(
        value(
            &text,
            "recwatch_polls_total{account=\"default\",outcome=\"ok\"}"
        )
        .is_some_and(|v| v >= 1.0)
    );
    assert!(app.stop().await.success());
}
