//! The documentation and the dashboard name what the code records: every metric and every
//! built-in rule is documented, and every metric the Grafana dashboard queries exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use vana_sandbox_monitor::metrics::names::{Kind, METRICS};
use vana_sandbox_monitor::threat::RuleSet;

const DOC: &str = include_str!("../../docs/OBSERVABILITY.md");
const DASHBOARD: &str = include_str!("../../docs/grafana-dashboard.json");

#[test]
fn every_metric_and_rule_is_documented() {
    for m in METRICS {
        assert!(
            DOC.contains(&format!("`{}`", m.name)),
            "{} is not in OBSERVABILITY.md",
            m.name
        );
    }
    for r in RuleSet::builtin().rules() {
        assert!(
            DOC.contains(&format!("| `{}` |", r.id)),
            "rule {} is not in OBSERVABILITY.md",
            r.id
        );
    }
}

#[test]
fn the_dashboard_queries_only_metrics_that_exist() {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut known = BTreeSet::new();
    for m in METRICS {
        known.insert(m.name.to_string());
        if m.kind == Kind::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{}{s}", m.name));
            }
        }
    }
    let word = regex::Regex::new(r"vana_sandbox_[a-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            for m in word.find_iter(expr) {
                assert!(
                    known.contains(m.as_str()),
                    "panel {:?} queries unknown {}",
                    p["title"],
                    m.as_str()
                );
                used.insert(m.as_str().to_string());
            }
        }
    }
    assert!(used.len() >= 20, "{used:?}");
}
