//! The shipped Prometheus configuration, alert rules, dashboard and runbook: valid,
//! unit-tested with promtool, naming only metrics the gateway really exports, every alert
//! documented in docs/runbook.md, every dashboard panel with a unit and the instance
//! selector.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::*;

/// The alert rules of grafana/alerts.yml, in file order; each has a section of that name
/// in docs/runbook.md.
const ALERTS: &[&str] = &[
    "FlashgateDown",
    "FlashgateAbsent",
    "FlashgateQueueSaturated",
    "FlashgateStoreUnavailable",
    "FlashgateBackendBreakerOpen",
    "FlashgateDeliveryBacklogGrowing",
    "FlashgateDrainAtMinimum",
    "FlashgateDeliveryStuck",
    "FlashgateCompensating",
    "FlashgateOversellGuardTripped",
    "FlashgateDeliveryConflict",
    "FlashgateSaleHeld",
    "FlashgateHigh5xxRate",
    "FlashgateBadGatewayRate",
];

/// Gauges every instance reads from the same store (or the same fleet-wide setting): each
/// instance exports the same figure, so a sum over instances multiplies it.
const SHARED_GAUGES: &[&str] = &[
    "flashgate_stock_remaining",
    "flashgate_sale_held",
    "flashgate_instances",
    "flashgate_drain_rate_configured",
    "flashgate_drain_rate_min",
    "flashgate_outbox_lag_seconds",
];

/// Metric name prefixes the alerts and the dashboard are checked for: the gateway's own
/// metrics and the process collector's. Prometheus's own series (`up`) and functions
/// (`absent`) carry neither.
const EXPORTED_PREFIXES: &[&str] = &["flashgate_", "process_"];

/// A file of the repository.
fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

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
    let found = format!("{} rules found", ALERTS.len());
    assert!(out.contains(&found), "{out}");
    // The alerts and the dashboard select `up{job="flashgate"}`; the admin listener's
    // default port is 8090 (9090 is Prometheus's own).
    let config = read("grafana/prometheus.yml");
    assert!(config.contains("job_name: flashgate\n"), "{config}");
    assert!(config.contains("127.0.0.1:8090"), "{config}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "grafana/alerts_test.yml"]);
}

/// Metric names (without histogram suffixes) starting with one of [`EXPORTED_PREFIXES`]
/// that a text mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    for prefix in EXPORTED_PREFIXES {
        let mut i = 0;
        while let Some(pos) = text[i..].find(prefix) {
            let start = i + pos;
            // Only at the start of a name: not `subprocess_…`.
            if start > 0 && (word(bytes[start - 1]) || bytes[start - 1].is_ascii_uppercase()) {
                i = start + prefix.len();
                continue;
            }
            let mut end = start;
            while end < bytes.len() && word(bytes[end]) {
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
    }
    names
}

/// The dashboard.
fn read_dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/dashboards/flashgate.json")).expect("dashboard JSON")
}

/// The dashboard's panels, its rows left out. A collapsed row keeps its panels inside it,
/// out of every check here: rows stay open.
fn dashboard_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            assert_ne!(
                panel["collapsed"], true,
                "row {} is collapsed",
                panel["title"]
            );
            assert!(
                panel["panels"].as_array().is_none_or(Vec::is_empty),
                "row {} holds panels",
                panel["title"]
            );
        } else {
            panels.push(panel);
        }
    }
    panels
}

/// Every query of the dashboard: its panels' targets and its variables' queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard_panels(dashboard) {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = variable["definition"].as_str() {
            queries.push(q.to_owned());
        }
    }
    queries
}

/// The alert names of a rules file, each with the lines of its rule (up to the next one).
fn alert_rules(rules: &str) -> Vec<(String, Vec<&str>)> {
    let mut found: Vec<(String, Vec<&str>)> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            found.push((name.trim().to_owned(), Vec::new()));
        } else if let Some((_, lines)) = found.last_mut() {
            lines.push(line);
        }
    }
    found
}

#[test]
fn every_alert_has_annotations_and_a_runbook_section() {
    let rules = read("grafana/alerts.yml");
    let runbook = read("docs/runbook.md");
    let found = alert_rules(&rules);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS, "the rules of grafana/alerts.yml");
    let sections: Vec<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .collect();
    for (name, lines) in &found {
        for key in ["summary", "description", "runbook_url"] {
            let value = lines
                .iter()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .unwrap_or_else(|| panic!("{name} has no `{key}` annotation"));
            assert!(
                value.trim_matches('"').trim().len() > 10,
                "{name}: `{key}` is empty"
            );
        }
        let url = lines
            .iter()
            .find_map(|l| l.strip_prefix("runbook_url: "))
            .expect("runbook_url");
        assert_eq!(
            url,
            format!("\"docs/runbook.md#{}\"", name.to_lowercase()),
            "{name}'s runbook_url"
        );
        assert!(
            sections.contains(&name.as_str()),
            "docs/runbook.md has no section `## {name}`"
        );
    }
    // A renamed or removed rule leaves no section behind.
    for section in sections.iter().filter(|s| s.starts_with("Flashgate")) {
        assert!(
            ALERTS.contains(section),
            "docs/runbook.md has a section for no alert: {section}"
        );
    }
}

#[test]
fn dashboard_has_units_an_instance_selector_and_no_sum_over_shared_gauges() {
    let dashboard = read_dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an `instance` variable");
    assert_eq!(
        instance["definition"],
        "label_values(flashgate_build_info, instance)"
    );
    assert_eq!(instance["multi"], true);
    assert_eq!(instance["includeAll"], true);
    let mut exprs = Vec::new();
    for panel in dashboard_panels(&dashboard) {
        let title = &panel["title"];
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or("");
        assert!(!unit.is_empty(), "panel {title} has no unit");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "panel {title} ignores the instance selector: {expr}"
            );
            for gauge in SHARED_GAUGES {
                assert!(
                    !(expr.contains(gauge) && expr.contains("sum")),
                    "panel {title}: every instance exports the same {gauge}; aggregate it \
                     with max, not sum: {expr}"
                );
            }
            exprs.push(expr);
        }
    }
    // The per-instance row.
    for wanted in [
        "sum by (instance) (rate(flashgate_requests_total",
        "sum by (instance) (flashgate_queue_depth",
        "flashgate_drain_share",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "rate(process_cpu_seconds_total",
        "up{job=\"flashgate\"",
        "flashgate_build_info",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(wanted)),
            "no panel queries {wanted}"
        );
    }
}

#[tokio::test]
async fn alerts_use_only_exported_metrics() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    // Exercise the paths whose series appear on first use.
    let t = token_for(gw.public_addr, "phone", "a").await;
    order(gw.public_addr, "phone", "a", &t).await;
    send(gw.public_addr, get("/x")).await;
    // The delivery runs after the order's answer; its counter appears with its first attempt.
    let admin = gw.admin_addr;
    until("the order's delivery to be counted", || async move {
        scrape(admin).await.contains("flashgate_deliveries_total{")
    })
    .await;
    let text = scrape(admin).await;
    let mut exported = names_in(&text);
    // 5xx answers' series appear with the first one: a gateway whose upstream is gone.
    let down = gateway(&config_text(&dead_url().await, "")).await;
    assert_eq!(
        send(down.public_addr, get("/x")).await.status,
        http::StatusCode::BAD_GATEWAY
    );
    let down_text = scrape(down.admin_addr).await;
    assert_eq!(
        value(
            &down_text,
            "flashgate_server_errors_total{route=\"proxy\",status=\"502\"}"
        ),
        Some(1.0),
        "{down_text}"
    );
    exported.extend(names_in(&down_text));
    for name in [
        "flashgate_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(exported.contains(name), "/metrics has no {name}:\n{text}");
    }
    let used = names_in(&read("grafana/alerts.yml"));
    assert!(!used.is_empty());
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "alerts use metrics the gateway does not export: {missing:?}"
    );
    let used = names_in(&dashboard_queries(&read_dashboard()).join("\n"));
    assert!(used.contains("process_open_fds"), "{used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics the gateway does not export: {missing:?}"
    );
}

/// The equality matchers of every `flashgate_…{…}` selector in `exprs`: the series an
/// expression needs, as (metric, [(label, value)]). Regex matchers and template variables
/// (`$instance`) select nothing fixed and are left out.
fn fixed_selectors(exprs: &[String]) -> BTreeSet<(String, Vec<(String, String)>)> {
    let mut out = BTreeSet::new();
    for expr in exprs {
        for name in names_in(expr) {
            let mut rest = expr.as_str();
            while let Some(at) = rest.find(&format!("{name}{{")) {
                let after = &rest[at + name.len() + 1..];
                let Some(end) = after.find('}') else { break };
                let labels: Vec<(String, String)> = after[..end]
                    .split(',')
                    .filter_map(|m| {
                        let (k, v) = m.split_once('=')?;
                        let v = v.strip_prefix('"')?.strip_suffix('"')?;
                        (!k.ends_with('!') && !v.starts_with('~') && !v.contains('$'))
                            .then(|| (k.trim().to_owned(), v.to_owned()))
                    })
                    .filter(|(k, _)| !["instance", "job"].contains(&k.as_str()))
                    .collect();
                out.insert((name.clone(), labels));
                rest = &after[end..];
            }
        }
    }
    out
}

/// A gateway that has served nothing yet already exports every series the dashboard's
/// panels and the alert rules read, with the label values they select, at 0: a panel on a
/// fresh instance shows 0, not "No data", and a rule can be checked against it.
#[tokio::test]
async fn a_fresh_gateway_exports_every_series_the_dashboard_and_alerts_read() {
    let up = Upstream::start().await;
    let gw = sale_gateway(&up, "[[sale]]\nsku = \"phone\"\nstock = 1\n").await;
    let text = scrape(gw.admin_addr).await;
    let mut exprs = alert_exprs(&read("grafana/alerts.yml"));
    exprs.extend(dashboard_queries(&read_dashboard()));
    let exported = names_in(&text);
    let mut missing = Vec::new();
    for (name, labels) in fixed_selectors(&exprs) {
        if !name.starts_with("flashgate_") {
            continue;
        }
        let found = exported.contains(&name)
            && text.lines().any(|l| {
                let series = l.split_whitespace().next().unwrap_or("");
                (series == name
                    || series.starts_with(&format!("{name}{{"))
                    || series.starts_with(&format!("{name}_bucket{{")))
                    && labels
                        .iter()
                        .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            });
        if !found {
            missing.push(format!("{name}{labels:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "a fresh gateway lacks series the dashboard or alerts read: {missing:#?}\n{text}"
    );
    // The selector reader reads what it must.
    let seen = fixed_selectors(&[
        "rate(flashgate_server_errors_total{route=\"proxy\",status=\"502\"}[5m]) + flashgate_queue_depth{sku=~\"$sku\"}".to_owned(),
    ]);
    assert!(seen.contains(&(
        "flashgate_server_errors_total".to_owned(),
        vec![
            ("route".to_owned(), "proxy".to_owned()),
            ("status".to_owned(), "502".to_owned())
        ]
    )));
    assert!(seen.contains(&("flashgate_queue_depth".to_owned(), vec![])));
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
        // Listening is not ready: a starting Prometheus answers 503 "Service Unavailable"
        // (not JSON) until its storage is open (a fresh clone's CI run met it once).
        let ready = tokio::net::TcpStream::connect(prom).await.is_ok()
            && send(prom, get("/-/ready")).await.status == http::StatusCode::OK;
        if ready {
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

    let dashboard = read_dashboard();
    let mut checked = 0;
    for panel in dashboard_panels(&dashboard) {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            // As Grafana sends them with "All" selected.
            let concrete = expr
                .replace("$__rate_interval", "1m")
                .replace("$sku", ".*")
                .replace("$instance", ".*");
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
    // The instance selector's query (label_values(flashgate_build_info, instance)) finds
    // the gateway.
    let v = send(
        prom,
        get(&format!(
            "/api/v1/label/instance/values?match%5B%5D={}",
            encode("flashgate_build_info")
        )),
    )
    .await
    .json();
    let target = admin.to_string();
    assert!(
        v["data"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i.as_str() == Some(target.as_str()))),
        "instance selector: {v}"
    );
    // The rules loaded into Prometheus too, all healthy.
    let r = send(prom, get("/api/v1/rules")).await.json();
    let loaded = r["data"]["groups"][0]["rules"].as_array().expect("rules");
    assert_eq!(loaded.len(), ALERTS.len(), "{r}");
    for rule in loaded {
        assert_ne!(rule["health"], "err", "{rule}");
    }
}
