//! The shipped load tests: every scenario file is valid, scaled-down runs of the scenarios
//! pass their invariant checks through the real binaries (Redis restart and a Redis Cluster
//! included), and a run whose promise is broken exits non-zero.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The gateway binary the workspace built beside the load tester (`cargo test
/// --workspace` builds every member's binaries before any test runs).
fn flashgate_binary() -> PathBuf {
    let beside = Path::new(env!("CARGO_BIN_EXE_flashgate-loadtest"))
        .with_file_name(format!("flashgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        beside.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (tests/run.sh does), \
         which builds the gateway too",
        beside.display()
    );
    beside
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashgate-loadtest"))
        .args(args)
        .arg("--flashgate")
        .arg(flashgate_binary())
        .args(["--progress", "0"])
        .output()
        .expect("flashgate-loadtest runs")
}

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashgate-test-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Load-test runs take the machine for themselves: one at a time, so that one run's crowd
/// does not slow another's gateway into its timeouts.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs a scenario with a JSON report and returns (exit code, report, stdout).
fn run(scenario: &str, extra: &[&str], report: &Path) -> (i32, Value, String) {
    let mut args = vec![scenario, "--json", report.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let out = {
        let _machine = ONE_RUN_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loadtest(&args)
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    (out.status.code().unwrap_or(-1), json, stdout)
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect()
}

/// The names of a report's checks.
fn check_names(report: &Value) -> Vec<&str> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = format!("{}/scenarios", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        let out = loadtest(&["--check", path.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(
        seen >= 10,
        "the scenarios of the load-test suite ship, chaos and several-instance ones included"
    );
}

/// Scenarios that another test here runs (scaled down, with its own figures checked).
const RUN_BY_THEIR_OWN_TEST: [&str; 7] = [
    "busy-backend",
    "chaos-mixed",
    "clicks-and-replays",
    "cluster-3",
    "redis-restart",
    "sales-day",
    "unpaid-orders",
];

/// Every other shipped scenario as a smoke run (`--smoke`: a few seconds, at most 200
/// users): it runs through today's binaries and contract, and every invariant holds. No
/// figure is judged; `loadtest/run.sh NAME` is the full run that judges them.
#[test]
fn every_other_shipped_scenario_passes_a_smoke_run() {
    let dir = format!("{}/scenarios", env!("CARGO_MANIFEST_DIR"));
    let mut smoked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("a named scenario")
            .to_owned();
        if RUN_BY_THEIR_OWN_TEST.contains(&name.as_str()) {
            continue;
        }
        let report = scratch(&format!("smoke-{name}.json"));
        let (code, r, stdout) = run(path.to_str().expect("utf-8"), &["--smoke"], &report);
        assert_eq!(code, 0, "{name}: {:?}\n{stdout}", failed_checks(&r));
        assert!(
            stdout.contains("smoke run: no figure judged"),
            "{name}: {stdout}"
        );
        let users = r["users"].as_u64().expect("users");
        assert!((1..=200).contains(&users), "{name}: {users} users");
        let names = check_names(&r);
        for invariant in [
            "every request answered",
            "every order delivered exactly once",
        ] {
            assert!(names.contains(&invariant), "{name}: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.ends_with("(scenario)")),
            "{name}: a figure was judged: {names:?}"
        );
        smoked.push(name);
    }
    assert!(smoked.len() >= 8, "smoked {smoked:?}");
}

#[test]
fn a_broken_scenario_is_refused_naming_the_key() {
    let path = scratch("broken.toml");
    let cases = [
        ("users = 10\nclicks = 0\n", "crowd.clicks"),
        ("users = 10\n[gateway.queue]\ndrain_rte = 5\n", "drain_rte"),
        ("[[wave]]\nsku = \"b\"\nusers = 5\n", "wave.sku"),
        (
            "users = 10\n[[wave]]\nsku = \"a\"\nusers = 5\n",
            "crowd.users",
        ),
    ];
    for (middle, named) in cases {
        let text =
            format!("name = \"x\"\n[crowd]\n{middle}[[gateway.sale]]\nsku = \"a\"\nstock = 1\n");
        std::fs::write(&path, text).expect("write");
        let out = loadtest(&["--check", path.to_str().expect("utf-8")]);
        assert_eq!(out.status.code(), Some(2), "{named}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
}

#[test]
fn clicks_and_replays_keep_one_order_per_user() {
    let report = scratch("clicks.json");
    let (code, r, stdout) = run(
        &scenario("clicks-and-replays"),
        &["--users", "800"],
        &report,
    );
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert_eq!(r["passed"], true);
    assert_eq!(r["orders"]["stock_initial"], 300);
    assert_eq!(r["orders"]["stock_final"], 0);
    assert_eq!(r["orders"]["applied_at_backend"], 300);
    assert_eq!(r["outcomes"]["reserved"], 300);
    // Three clicks per user, and every reserved user replayed its token twice.
    assert_eq!(r["funnel"]["offered"], 800 * 3);
    assert!(r["answers"]["replay"]["ok"].as_u64().expect("replays") >= 600);
    assert!(stdout.contains("result: PASS"), "{stdout}");
}

/// The backend cancels a share of its orders while the crowd buys: each cancel takes effect
/// once, its unit goes back and is sold again, and the books balance (sold = applied −
/// cancelled).
#[test]
fn unpaid_orders_hand_their_units_back_once() {
    let report = scratch("unpaid.json");
    let (code, r, stdout) = run(&scenario("unpaid-orders"), &[], &report);
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    let orders = &r["orders"];
    let cancelled = orders["cancelled"].as_u64().expect("cancelled");
    assert!(cancelled > 0, "{orders}");
    let sold = 400 - orders["stock_final"].as_u64().expect("stock");
    assert_eq!(
        orders["applied_at_backend"].as_u64(),
        Some(sold + cancelled),
        "{orders}"
    );
    let names = check_names(&r);
    assert!(
        names.contains(&"every cancel handed its unit back once"),
        "{names:?}"
    );
}

/// A sales day on two instances: sales created, changed and ended through either
/// instance's admin API while crowds buy, the file reloaded with SIGHUP mid-sale, the
/// backend cancelling a tenth of its orders: every action taken, every sale's invariants
/// held, the ended sale's queued buyers answered `closed`, cancelled units sold again.
#[test]
fn a_sales_day_runs_live_sales_and_resells_cancelled_units() {
    let report = scratch("sales-day.json");
    let (code, r, stdout) = run(&scenario("sales-day"), &[], &report);
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    let operator = r["operator"].as_array().expect("operator actions");
    assert_eq!(operator.len(), 6, "{operator:?}");
    let sales: Vec<&Value> = r["sales"].as_array().expect("sales").iter().collect();
    let skus: Vec<&str> = sales.iter().filter_map(|s| s["sku"].as_str()).collect();
    assert_eq!(skus, ["keyboards", "sneakers", "headphones", "watches"]);
    let checks = r["checks"].as_array().expect("checks");
    for sku in &skus {
        let of_sale = |name: &str| {
            checks
                .iter()
                .find(|c| c["sale"] == *sku && c["name"] == name)
                .unwrap_or_else(|| panic!("{sku}: no check {name}"))
        };
        for name in [
            "reserved == stock sold",
            "every order delivered exactly once",
            "every cancel handed its unit back once",
        ] {
            assert_eq!(of_sale(name)["ok"], true, "{sku}: {}", of_sale(name));
        }
        if *sku != "headphones" {
            let resold = of_sale("cancelled units sold again (scenario)");
            assert_eq!(resold["ok"], true, "{sku}: {resold}");
        }
    }
    // The reload doubled the file sale's drain; the API change raised sneakers'.
    assert_eq!(sales[0]["drain"]["configured"], 80.0);
    assert_eq!(sales[1]["drain"]["configured"], 150.0);
    // Ended with buyers still queued: they were answered `closed`, later ones sale_closed.
    assert!(
        r["outcomes"]["refused:closed"].as_u64().unwrap_or(0) > 0,
        "{}",
        r["outcomes"]
    );
    let headphones = &sales[2]["orders"];
    assert!(
        headphones["stock_final"].as_u64().unwrap_or(0) > 0,
        "{headphones}"
    );
}

/// A backend of known capacity behind a drain that outruns it: the deliverer finds its
/// pace (few 503s) and every order arrives; with the old fixed 16 in flight the same run
/// floods it and fails the check.
#[test]
fn a_busy_backend_is_not_flooded() {
    // Scaled down: 150 buyers for 150 units.
    let smaller = std::fs::read_to_string(scenario("busy-backend"))
        .expect("busy-backend")
        .replace("stock = 1_000", "stock = 150");
    let path = scratch("busy.toml");
    std::fs::write(&path, &smaller).expect("write");
    let report = scratch("busy.json");
    let (code, r, stdout) = run(path.to_str().expect("utf-8"), &["--users", "150"], &report);
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert_eq!(r["orders"]["applied_at_backend"], 150);
    let fixed = smaller.replace(
        "[gateway.limits]",
        "[gateway.delivery]\nmax_in_flight = 16\n\n[gateway.limits]",
    );
    let path = scratch("busy-fixed.toml");
    std::fs::write(&path, fixed).expect("write");
    let report = scratch("busy-fixed.json");
    let (code, r, stdout) = run(path.to_str().expect("utf-8"), &["--users", "150"], &report);
    assert_eq!(code, 1, "{stdout}");
    let flooded = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "the backend was not flooded (scenario)")
        .expect("the check");
    assert_eq!(flooded["ok"], false, "{flooded}");
}

#[test]
fn a_redis_restart_mid_sale_loses_and_doubles_nothing() {
    let report = scratch("redis.json");
    let svg = scratch("redis.svg");
    // The shipped scenario with a store timeout of 1 s instead of 200 ms. The debug build's
    // one thread, flooded by the crowd, took longer than 200 ms to read Redis's replies (the
    // release build answers in about 1 ms): its own calls timed out, the breaker opened
    // before Redis was even killed, and users ran out of retries before the sale sold out.
    let shipped = std::fs::read_to_string(scenario("redis-restart")).expect("the scenario");
    assert!(
        shipped.contains("timeout = \"200ms\""),
        "the scenario's store timeout"
    );
    let patient = scratch("redis-restart.toml");
    std::fs::write(
        &patient,
        shipped.replace("timeout = \"200ms\"", "timeout = \"1s\""),
    )
    .expect("write the scenario");
    let (code, r, stdout) = run(
        patient.to_str().expect("utf-8"),
        &["--users", "8000", "--svg", svg.to_str().expect("utf-8")],
        &report,
    );
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert_eq!(r["store"], "redis");
    assert_eq!(r["orders"]["stock_final"], 0);
    assert_eq!(r["orders"]["applied_at_backend"], 1000);
    let outage = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "store outage reached the crowd (scenario)")
        .expect("the scenario checks the outage");
    assert_eq!(outage["ok"], true, "{outage}");
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(
        chart.starts_with("<svg") && chart.contains("queue depth"),
        "an SVG chart"
    );
}

/// Short chaos runs on fixed seeds: two instances, every kind of fault, every invariant and
/// a recovery without help at the end of each. `loadtest/run.sh chaos-mixed --runs 50` is
/// the long form.
#[test]
fn short_chaos_runs_on_fixed_seeds_keep_every_promise() {
    let full = std::fs::read_to_string(scenario("chaos-mixed")).expect("chaos-mixed");
    let short = full
        .replace("users = 3_000", "users = 600")
        .replace("arrival_rate = 750", "arrival_rate = 200")
        .replace("faults = 10", "faults = 6")
        .replace("window = \"4s\"", "window = \"3s\"")
        .replace("drain_rate = 150", "drain_rate = 40")
        .replace("stock = 600", "stock = 120");
    assert_ne!(short, full, "the scenario was scaled down");
    let path = scratch("chaos-short.toml");
    std::fs::write(&path, short).expect("write");
    let report = scratch("chaos-short.json");
    let (code, r, stdout) = run(
        path.to_str().expect("utf-8"),
        &["--seed", "1", "--runs", "3"],
        &report,
    );
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert!(stdout.contains("3 runs, 0 with violations"), "{stdout}");
    // The last run's report: faults were injected, and the checks that only chaos runs
    // make were made.
    assert_eq!(r["chaos"]["seed"], 3);
    assert!(
        r["chaos"]["injected"].as_u64().expect("injected") > 0,
        "{}",
        r["chaos"]
    );
    let names = check_names(&r);
    for name in [
        "recovered by itself",
        "no delivery left pending",
        "no acknowledged order compensated",
    ] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
}

/// Two instances on a three-master Redis Cluster hold the sale's one drain budget: the
/// backend gets the configured total, not that much from each instance (which would be
/// twice it). The scenario's tight figures (never above 220 in one second, ±5 % in total)
/// are the load test's to print on a quiet machine (`loadtest/run.sh cluster-3`): here,
/// with the suite's other work on the same cores, a starved backend or deliverer bunches
/// one second's orders into the next (306 in one second seen on a busy CI machine, while
/// the total held at −0.9 %). So the test checks the total within ±50 %: one budget
/// passes however slow the machine, one per instance (+100 %) fails.
#[test]
fn instances_on_a_cluster_feed_the_backend_the_total_drain_rate() {
    let full = std::fs::read_to_string(scenario("cluster-3")).expect("cluster-3");
    let loose = full
        .replace(
            "drain_tolerance = 0.05    # the backend's rate, first order to last: 200/s ±5 %",
            "drain_tolerance = 0.5",
        )
        .replace(
            "burst_limit = 1.1         # and never above 220 orders in any one second\n",
            "",
        );
    assert!(
        !loose.contains("\nburst_limit") && loose.contains("\ndrain_tolerance = 0.5\n"),
        "the test loosened the scenario's figures"
    );
    let path = scratch("cluster-3-loose.toml");
    std::fs::write(&path, loose).expect("write");
    let report = scratch("cluster.json");
    let (code, r, stdout) = run(path.to_str().expect("utf-8"), &["--users", "3000"], &report);
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert_eq!(r["store"], "redis-cluster");
    assert_eq!(r["orders"]["applied_at_backend"], 1400);
    let c = r["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "drain rate held in total (scenario)")
        .expect("the total drain rate is checked");
    assert_eq!(c["ok"], true, "{c}");
}

#[test]
fn a_broken_promise_fails_the_run() {
    // 40 users cannot buy 100 units: the scenario's `sold_out` promise fails, exit 1.
    let path = scratch("unsold.toml");
    std::fs::write(
        &path,
        "name = \"unsold\"\n[crowd]\nusers = 40\n[expect]\nsold_out = true\n\
         [gateway.queue]\ndrain_rate = 1000\n[gateway.log]\nlevel = \"warn\"\n\
         [[gateway.sale]]\nsku = \"a\"\nstock = 100\n",
    )
    .expect("write");
    let report = scratch("unsold.json");
    let (code, r, stdout) = run(path.to_str().expect("utf-8"), &[], &report);
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(r["passed"], false);
    assert_eq!(failed_checks(&r).len(), 1, "{:?}", failed_checks(&r));
    assert_eq!(r["orders"]["stock_final"], 60);
    assert!(stdout.contains("[FAIL] sold out (scenario)"), "{stdout}");
    assert!(stdout.contains("result: FAIL"), "{stdout}");
}

/// A crowd done before the scenario's last event: the books are read once the event is over
/// (here Redis is back), not while Redis is down. Reading them during the outage failed the
/// run's settle step, and the run then waited forever for its side tasks.
#[test]
fn a_crowd_done_before_the_last_event_is_judged_after_it() {
    let path = scratch("early-crowd.toml");
    std::fs::write(
        &path,
        "name = \"early-crowd\"\nstore = \"redis\"\n[crowd]\nusers = 20\narrival_rate = 200\n\
         [[event]]\nat = \"1s\"\naction = \"restart_redis\"\ndown_for = \"2s\"\n\
         [gateway.queue]\ndrain_rate = 1000\nresponse = \"async\"\n[gateway.log]\nlevel = \"warn\"\n\
         [[gateway.sale]]\nsku = \"a\"\nstock = 10\n",
    )
    .expect("write");
    let report = scratch("early-crowd.json");
    let (code, r, stdout) = run(path.to_str().expect("utf-8"), &[], &report);
    assert_eq!(code, 0, "{:?}\n{stdout}", failed_checks(&r));
    assert_eq!(r["orders"]["stock_final"], 0);
    assert_eq!(r["orders"]["applied_at_backend"], 10);
}
