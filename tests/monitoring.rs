//! The shipped Prometheus configuration and alert rules: valid, unit-tested with promtool,
//! and naming only metrics the gateway really exports.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool must be installed (tests/run.sh installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_config_is_valid() {
    let out = promtool(&["check", "config", "grafana/prometheus.yml"]);
    assert!(out.contains("4 rules found"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "grafana/alerts_test.yml"]);
}

/// Metric names (without histogram suffixes) a text mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("flashgate_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('_');
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        i = end;
    }
    names
}

#[tokio::test]
async fn alerts_use_only_exported_metrics() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    // Exercise the paths whose series appear on first use.
    let t = token_for(gw.public_addr, "phone", "a").await;
    order(gw.public_addr, "phone", "a", &t).await;
    send(gw.public_addr, get("/x")).await;
    let exported = names_in(&String::from_utf8_lossy(
        &send(gw.admin_addr, get("/metrics")).await.body,
    ));
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts.yml"))
        .expect("alerts.yml");
    let used = names_in(&rules);
    assert!(!used.is_empty());
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "alerts use metrics the gateway does not export: {missing:?}"
    );
}
