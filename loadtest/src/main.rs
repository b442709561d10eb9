//! flashgate-loadtest: runs a flash-crowd scenario against a real gateway and checks that
//! the sale kept its promises.
//!
//! It starts what the scenario needs (demo backend, redis-server, the flashgate binary), lets
//! the crowd loose through the public HTTP API, samples the gateway while it goes, waits for
//! delivery to settle, then reports and checks the invariants. Exit 0: every check held;
//! 1: a check failed; 2: the scenario or the command line is wrong; 3: the stack would not start.

mod cancels;
mod chaos;
mod chart;
mod check;
mod client;
mod fairness;
mod fault_proxy;
mod judge;
mod opening;
mod operator;
mod report;
mod sampler;
mod scenario;
mod smoke;
mod stack;
mod tally;
mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::report::{Funnel, Orders, Report};
use crate::scenario::{Scenario, SharedStore, StoreChoice, Wave};
use crate::stack::{Programs, Stack};
use crate::tally::{Route, Tally};
use crate::user::{Journey, Plan};

/// Runs a flash-crowd scenario against flashgate and checks the sale's invariants.
#[derive(Debug, Parser)]
#[command(name = "flashgate-loadtest", version, about)]
struct Cli {
    /// The scenario file (see loadtest/scenarios/).
    scenario: PathBuf,
    /// Run with this many users instead of the scenario's.
    #[arg(long)]
    users: Option<u64>,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw admitted/refused per second and queue depth as SVG here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// The flashgate binary (default: next to this one).
    #[arg(long, value_name = "PATH")]
    flashgate: Option<PathBuf>,
    /// redis-server (default: on PATH).
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 1)]
    progress: u64,
    /// Load-generator threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Only check the scenario (and its gateway config) and exit.
    #[arg(long)]
    check: bool,
    /// The chaos schedule's seed (replays a run's faults exactly); default: the scenario's,
    /// or a random one.
    #[arg(long)]
    seed: Option<u64>,
    /// Runs the scenario this many times, each with the next seed, and prints a table.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// A smoke run: the scenario cut down to a few seconds (at most 200 users, a short
    /// opening and chaos window), every invariant checked, no figure judged.
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut scenario = match Scenario::load(&cli.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.smoke {
        smoke::cut_down(&mut scenario);
        scenario.name.push_str(" (smoke run: no figure judged)");
    }
    if let Some(users) = cli.users {
        if users == 0 {
            eprintln!("error: --users must be at least 1");
            return ExitCode::from(2);
        }
        if !scenario.waves.is_empty() {
            eprintln!(
                "error: --users sets one crowd's users; this scenario's waves each name theirs"
            );
            return ExitCode::from(2);
        }
        scenario.crowd.users = users;
    }
    if cli.check {
        return check_only(&cli, &scenario);
    }
    if cli.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        return ExitCode::from(2);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        rt.worker_threads(cli.threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    rt.block_on(runs(cli, scenario))
}

/// One line of the `--runs` table.
struct RunLine {
    seed: u64,
    faults: u32,
    orders: u64,
    violations: Vec<String>,
    exit: u8,
}

/// Runs the scenario `--runs` times on consecutive seeds; with more than one, prints a
/// table. The exit code is the worst run's.
async fn runs(cli: Cli, scenario: Scenario) -> ExitCode {
    let first = cli
        .seed
        .or_else(|| scenario.chaos.as_ref().map(|c| c.seed).filter(|s| *s != 0))
        .unwrap_or_else(rand::random);
    let mut lines = Vec::new();
    for i in 0..u64::from(cli.runs) {
        let seed = first.wrapping_add(i);
        lines.push(run(&cli, &scenario, seed).await);
    }
    if cli.runs > 1 {
        println!(
            "\n{:>20}  {:>6}  {:>7}  violations",
            "seed", "faults", "orders"
        );
        for l in &lines {
            let v = if l.exit == 3 {
                "the stack would not start".to_owned()
            } else if l.violations.is_empty() {
                "0".to_owned()
            } else {
                format!("{}: {}", l.violations.len(), l.violations.join("; "))
            };
            println!("{:>20}  {:>6}  {:>7}  {v}", l.seed, l.faults, l.orders);
        }
        let bad = lines.iter().filter(|l| l.exit != 0).count();
        println!("{} runs, {bad} with violations", lines.len());
    }
    ExitCode::from(lines.iter().map(|l| l.exit).max().unwrap_or(0))
}

async fn run(cli: &Cli, scenario: &Scenario, seed: u64) -> RunLine {
    let mut line = RunLine {
        seed,
        faults: 0,
        orders: 0,
        violations: Vec::new(),
        exit: 0,
    };
    let code = run_once(cli, scenario, seed, &mut line).await;
    line.exit = code;
    line
}

async fn run_once(cli: &Cli, scenario: &Scenario, seed: u64, line: &mut RunLine) -> u8 {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("flashgate")));
    let programs = Programs {
        flashgate: cli
            .flashgate
            .clone()
            .or(beside)
            .unwrap_or_else(|| "flashgate".into()),
        redis_server: stack::locate(
            cli.redis_server.as_deref(),
            "redis-server",
            "/usr/bin/redis-server",
        ),
    };
    let opens_at = scenario.crowd.sale_opens_in.map(|d| SystemTime::now() + d);
    let mut stack = match Stack::start(scenario, &programs, opens_at).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 3;
        }
    };
    eprintln!(
        "scenario {}: {} users on {} ({} store, {} instance(s)); gateway http://{}, admin http://{}, backend http://{}",
        scenario.name,
        scenario.users(),
        scenario
            .waves()
            .iter()
            .map(|w| w.sku.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        scenario.store.name(),
        stack.instances.len(),
        stack.public,
        stack.admin,
        stack.backend
    );
    let plan = scenario
        .chaos
        .as_ref()
        .map(|c| chaos::schedule(c, seed, stack.instances.len()));
    if let Some(plan) = &plan {
        eprintln!(
            "chaos seed {seed}: {} faults (replay with --seed {seed})",
            plan.len()
        );
        for p in plan {
            eprintln!("  {}", p.describe());
        }
    }
    let report = match crowd(cli, scenario, &stack, plan.as_deref(), seed).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e} (logs kept in {})", stack.dir.display());
            stack.stop().await;
            return 3;
        }
    };
    print!("{}", report.text());
    line.faults = report.chaos.as_ref().map_or(0, |c| c.injected);
    line.orders = report.orders.told_to_users;
    line.violations = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.to_owned())
        .collect();
    let mut code = if report.passed { 0 } else { 1 };
    if let Some(path) = &cli.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(path, b).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            code = 3;
        }
    }
    if let Some(path) = &cli.svg {
        let title = format!(
            "{}: order answers per second and queue depth",
            scenario.name
        );
        if let Err(e) = chart::draw(path, &title, &report.timeline, &report.samples) {
            eprintln!("error: {e}");
            code = 3;
        }
    }
    stack.stop().await;
    if report.passed {
        stack.clean();
    } else {
        eprintln!("gateway logs kept in {}", stack.dir.display());
    }
    code
}

/// `--check`: the scenario parsed; does its gateway config pass flashgate's validation?
fn check_only(cli: &Cli, scenario: &Scenario) -> ExitCode {
    let placeholder = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    let owned = scenario::Owned {
        listen: placeholder,
        admin_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 2)),
        backend: placeholder,
        admin_token: "check".into(),
        store: match scenario.store {
            StoreChoice::Memory => None,
            StoreChoice::Redis => Some(SharedStore::Redis("redis://127.0.0.1:1".into())),
            StoreChoice::RedisCluster => Some(SharedStore::Cluster(
                (1..=3).map(|p| format!("redis://127.0.0.1:{p}")).collect(),
            )),
        },
    };
    let opens_at = scenario.crowd.sale_opens_in.map(|d| SystemTime::now() + d);
    match scenario.gateway_settings(&owned, opens_at) {
        Ok(_) => {
            println!("{}: ok", cli.scenario.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", cli.scenario.display());
            ExitCode::from(2)
        }
    }
}

/// Lets the crowd loose, then gathers the evidence and judges it, sale by sale.
async fn crowd(
    cli: &Cli,
    scenario: &Scenario,
    stack: &Stack,
    faults: Option<&[chaos::Planned]>,
    seed: u64,
) -> Result<Report, String> {
    let waves = scenario.waves();
    // The stock of the sales there before the crowd; the others are put by events.
    let mut at_start = BTreeMap::new();
    for w in &waves {
        if stack.config.sales.iter().any(|s| s.sku.as_str() == w.sku) {
            at_start.insert(w.sku.clone(), stack.store_stock(&w.sku).await?);
        }
    }
    let skus: Vec<String> = waves.iter().map(|w| w.sku.clone()).collect();
    let c = &scenario.crowd;
    let users = scenario.users();
    let start = Instant::now();
    let tally = Arc::new(Tally::new(start));
    let crowds = stack
        .instances
        .iter()
        .map(|inst| {
            client::Crowd::new(
                format!("http://{}", inst.public),
                &stack.config.identity.header,
                c.connections.div_ceil(stack.instances.len()),
                c.request_timeout,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let plan = Arc::new(Plan {
        crowds,
        failover: stack.instances.len() > 1 || faults.is_some(),
        tally: tally.clone(),
        clicks: c.clicks,
        replays: c.replays,
        retries: c.retries,
        deadline: tokio::time::Instant::now() + c.max_duration,
        poll_every: c.poll_every,
    });

    let stop = CancellationToken::new();
    // The whole schedule (faults and events) runs, however soon the crowd is done: delivery
    // is tested too, and the books are read once the last event is over.
    let chaos_done = CancellationToken::new();
    let events_done = CancellationToken::new();
    let samples: sampler::Samples = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let side = async {
        let sampling = sampler::run(
            stack,
            &skus,
            start,
            Duration::from_millis(100),
            samples.clone(),
            stop.clone(),
        );
        let progress = progress(cli.progress, users, &tally, &done, &samples, start, &stop);
        let events = async {
            let taken = operator::perform(&scenario.events, stack, start, &stop).await;
            events_done.cancel();
            taken
        };
        let chaos = async {
            let injected = match faults {
                Some(plan) => Some(chaos::inject(plan, stack, start, &stop).await),
                None => None,
            };
            chaos_done.cancel();
            injected
        };
        let ((), (), taken, injected) = tokio::join!(sampling, progress, events, chaos);
        (taken, injected)
    };
    let crowd_over = CancellationToken::new();
    let cancelling = futures_util::future::join_all(
        skus.iter()
            .map(|sku| cancels::run(stack, sku, &scenario.backend, crowd_over.clone())),
    );
    let crowd = async {
        let mut set = tokio::task::JoinSet::new();
        for (i, at, sku) in arrivals(&waves) {
            tokio::time::sleep_until((start + at).into()).await;
            let plan = plan.clone();
            let done = done.clone();
            let abandons = abandons(i, c.abandon);
            let home = home_of(i, &c.spread, stack.instances.len());
            set.spawn(async move {
                let j = user::run(&plan, format!("user-{i}"), sku, abandons, home).await;
                done.fetch_add(1, Ordering::Relaxed);
                j
            });
        }
        let mut journeys = Vec::with_capacity(users as usize);
        while let Some(j) = set.join_next().await {
            journeys.push(j.map_err(|e| format!("a user task failed: {e}"))?);
        }
        crowd_over.cancel();
        Ok::<_, String>(journeys)
    };
    let users_done = async {
        // Whatever ends this (an error included), the side tasks end with it.
        let _side_ends = stop.clone().drop_guard();
        // The backend's cancels end with the crowd, before delivery is waited for.
        let (cancels, journeys) = tokio::join!(cancelling, crowd);
        let journeys = journeys?;
        let crowd_seconds = start.elapsed().as_secs_f64();
        let settle = Instant::now();
        chaos_done.cancelled().await;
        events_done.cancelled().await;
        let deadline = settle + scenario.expect.settle;
        let mut sales = Vec::with_capacity(waves.len());
        for w in &waves {
            // The store may still be coming back from the schedule's last fault.
            let terms = loop {
                match judge::terms(stack, scenario, &w.sku, at_start.get(&w.sku).copied()).await {
                    Ok(terms) => break terms,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            let within = deadline.saturating_duration_since(Instant::now());
            let settled = judge::settle_delivery(stack, &w.sku, terms.0, within).await;
            sales.push((terms, settled));
        }
        stop.cancel();
        Ok::<_, String>((
            journeys,
            crowd_seconds,
            settle.elapsed().as_secs_f64(),
            sales,
            cancels,
        ))
    };
    let ((taken, injected), result) = tokio::join!(side, users_done);
    let (journeys, crowd_seconds, settle_seconds, settled, cancels) = result?;

    let every: Vec<String> = stack
        .all_metrics()
        .await
        .into_iter()
        .map(Result::unwrap_or_default)
        .collect();
    let store_unavailable = tally.count(Route::Order, "store_unavailable")
        + tally.count(Route::Token, "store_unavailable")
        + tally.count(Route::Poll, "failed:store_unavailable");
    let run = judge::Run {
        stack,
        scenario,
        journeys: &journeys,
        unanswered_requests: tally.unanswered(),
        store_unavailable_answers: store_unavailable,
        faults,
        metrics: &every,
        start,
    };
    let collected = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut sales = Vec::with_capacity(waves.len());
    let mut checks = Vec::new();
    for ((w, (terms, settled)), cancels) in waves.iter().zip(settled).zip(&cancels) {
        let (sale, judged) = judge::sale(
            &run,
            judge::Sale {
                wave: w,
                terms,
                settled,
                cancels,
                samples: collected.by_sale.get(&w.sku).map_or(&[], Vec::as_slice),
            },
        )
        .await?;
        sales.push(sale);
        checks.extend(judged);
    }
    if !taken.is_empty() {
        checks.push(operator_check(&taken));
    }
    if let Some(share) = scenario.expect.shed_max {
        let applied: u64 = sales.iter().map(|s| s.orders.applied_at_backend).sum();
        let shed = stack.demo.shed();
        checks.push(check::check(
            "the backend was not flooded (scenario)",
            shed as f64 <= share * applied as f64,
            format!(
                "{shed} deliveries shed with 503 for {applied} orders applied (at most {:.0} %)",
                share * 100.0
            ),
        ));
    }
    let answers = tally.answers();
    Ok(Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        store: scenario.store.name().into(),
        users,
        crowd_seconds,
        settle_seconds,
        outcomes: outcomes(&journeys),
        answers: by_route(&answers),
        funnel: Funnel::of(&answers),
        orders: Orders::total(&sales),
        backend_shed: stack.demo.shed(),
        sales,
        latency: tally.percentiles(),
        operator: taken
            .iter()
            .map(|t| match &t.outcome {
                Ok(said) => format!("{:>6.1} s  {}: {said}", t.at.as_secs_f64(), t.what),
                Err(why) => format!("{:>6.1} s  {}: FAILED: {why}", t.at.as_secs_f64(), t.what),
            })
            .collect(),
        passed: checks.iter().all(|c| c.ok),
        checks,
        chaos: injected.map(|(injected, errors)| report::ChaosReport {
            seed,
            injected,
            errors,
            faults: faults
                .unwrap_or_default()
                .iter()
                .map(chaos::Planned::describe)
                .collect(),
        }),
        timeline: tally.timeline(),
        samples: collected.total,
    })
}

/// Every operator action the scenario planned was taken as asked.
fn operator_check(taken: &[operator::Taken]) -> check::Check {
    let failed: Vec<String> = taken
        .iter()
        .filter_map(|t| {
            t.outcome
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", t.what))
        })
        .collect();
    check::check(
        "every operator action taken",
        failed.is_empty(),
        match failed.is_empty() {
            true => format!("{} actions, each applied", taken.len()),
            false => format!(
                "{} of {} refused: {}",
                failed.len(),
                taken.len(),
                failed.join("; ")
            ),
        },
    )
}

/// Every user of every wave, in arrival order: its number (unique across waves), when it
/// arrives from the crowd's start, and the sale it comes for.
fn arrivals(waves: &[Wave]) -> Vec<(u64, Duration, String)> {
    let mut all = Vec::new();
    let mut i = 0;
    for w in waves {
        for n in 0..w.users {
            let after = match w.arrival_rate {
                0 => Duration::ZERO,
                rate => Duration::from_secs_f64(n as f64 / rate as f64),
            };
            all.push((i, w.from + after, w.sku.clone()));
            i += 1;
        }
    }
    all.sort_by_key(|(i, at, _)| (*at, *i));
    all
}

/// The instance user `i` reaches first: by the scenario's `spread` weights (user i falls in
/// the weight its place, i mod the weights' sum, lands in), else round the instances.
fn home_of(i: u64, spread: &[u32], instances: usize) -> usize {
    let total: u64 = spread.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return (i % instances as u64) as usize;
    }
    let mut at = i % total;
    for (n, &w) in spread.iter().enumerate() {
        if at < u64::from(w) {
            return n % instances;
        }
        at -= u64::from(w);
    }
    0
}

/// Whether user `i` leaves at the first retryable refusal: a fixed share, spread evenly.
fn abandons(i: u64, share: f64) -> bool {
    // Knuth's multiplicative hash spreads the leavers over the crowd, the same on every run.
    let spread = (i.wrapping_mul(2_654_435_761) % 10_000) as f64 / 10_000.0;
    spread < share
}

/// One progress line every `every` seconds until `stop`.
async fn progress(
    every: u64,
    users: u64,
    tally: &Tally,
    done: &AtomicU64,
    samples: &sampler::Samples,
    start: Instant,
    stop: &CancellationToken,
) {
    if every == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let f = Funnel::of(&tally.answers());
        let refused: u64 = f.refused.values().sum();
        let last = samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
            .last()
            .copied();
        eprintln!(
            "t={:>5.1}s users done {}/{users}  orders offered {} admitted {} refused {}  queue {}  stock {}",
            start.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            f.offered,
            f.admitted,
            refused,
            last.map_or("?".into(), |s| s.queued.to_string()),
            last.map_or("?".into(), |s| s.remaining.to_string()),
        );
    }
}

fn outcomes(journeys: &[Journey]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for j in journeys {
        *out.entry(j.outcome.label()).or_default() += 1;
    }
    out
}

fn by_route(answers: &BTreeMap<(Route, String), u64>) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((route, code), n) in answers {
        out.entry(route.name().to_owned())
            .or_default()
            .insert(code.clone(), *n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::home_of;

    #[test]
    fn a_spread_sends_users_by_its_weights() {
        let homes: Vec<usize> = (0..10).map(|i| home_of(i, &[80, 20], 2)).collect();
        assert_eq!(homes, [0; 10], "the first 80 of each 100 go to the first");
        let second = (0..1000).filter(|&i| home_of(i, &[80, 20], 2) == 1).count();
        assert_eq!(second, 200);
        assert_eq!(home_of(3, &[], 2), 1, "no spread: round the instances");
    }
}
