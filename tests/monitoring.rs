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
    assert!(out.contains("7 rules found"), "{out}");
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

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server for the test, killed on drop.
struct Prometheus(std::process::Child, std::path::PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn query(prom: std::net::SocketAddr, expr: &str) -> serde_json::Value {
    send(prom, get(&format!("/api/v1/query?query={}", encode(expr))))
        .await
        .json()
}

/// The `expr` values of the alert rules file.
fn alert_exprs(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_evaluates_on_a_real_prometheus() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 2\n").await;
    let (addr, admin) = (gw.public_addr, gw.admin_addr);
    for user in ["a", "b"] {
        let t = token_for(addr, "phone", user).await;
        order(addr, "phone", user, &t).await;
    }
    order(addr, "phone", "c", "0123456789abcdef0123456789abcdef").await;
    send(addr, get("/catalog")).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("flashgate-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts.yml");
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: flashgate\n    static_configs:\n      - targets: [\"{admin}\"]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), cfg).expect("config");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus must be installed (tests/run.sh installs it)");
    let _prometheus = Prometheus(child, dir);
    let prom: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

    // Wait (bounded) until Prometheus has scraped the gateway a few times, so that rate()
    // has samples to work with; keep a little traffic flowing meanwhile.
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "Prometheus never scraped the gateway"
        );
        send(addr, get("/catalog")).await;
        if tokio::net::TcpStream::connect(prom).await.is_ok() {
            let v = query(prom, "count_over_time(flashgate_queue_capacity[1m])").await;
            let scrapes = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            if scrapes >= 3.0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/grafana/dashboards/flashgate.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let concrete = expr.replace("$__rate_interval", "1m").replace("$sku", ".*");
            let v = query(prom, &concrete).await;
            assert_eq!(v["status"], "success", "{expr}: {v}");
            let n = v["data"]["result"].as_array().map_or(0, Vec::len);
            assert!(n > 0, "panel '{}' returns no data: {expr}", panel["title"]);
            checked += 1;
        }
    }
    let rules_text = std::fs::read_to_string(rules).expect("rules");
    for expr in alert_exprs(&rules_text) {
        // Alert expressions are comparisons that are empty while all is well: they must
        // parse and evaluate on the live data.
        let v = query(prom, &expr).await;
        assert_eq!(v["status"], "success", "{expr}: {v}");
        checked += 1;
    }
    assert!(checked >= 20, "checked {checked} expressions");
    // The rules loaded into Prometheus too.
    let r = send(prom, get("/api/v1/rules")).await.json();
    let loaded = r["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 7);
}
