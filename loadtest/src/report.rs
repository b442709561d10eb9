//! The end-of-run report, as text for people and JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::Check;
use crate::sampler::Sample;
use crate::tally::{Percentiles, Route, Second};

/// Everything a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What the scenario shows.
    pub description: String,
    /// Which store the gateway used.
    pub store: String,
    /// Users in the crowd.
    pub users: u64,
    /// Seconds from the first arrival to the last user's outcome.
    pub crowd_seconds: f64,
    /// Seconds delivery took to settle afterwards.
    pub settle_seconds: f64,
    /// Users by how their journey ended.
    pub outcomes: BTreeMap<String, u64>,
    /// Answers by route, then code ("ok" for 2xx).
    pub answers: BTreeMap<String, BTreeMap<String, u64>>,
    /// The order route's funnel.
    pub funnel: Funnel,
    /// Stock and orders, every sale's together.
    pub orders: Orders,
    /// Deliveries the backend shed with 503 (a backend of limited `workers`).
    pub backend_shed: u64,
    /// Each sale's figures.
    pub sales: Vec<SaleReport>,
    /// Latency percentiles per series.
    pub latency: Vec<Percentiles>,
    /// What the operator did during the run, and how each action went.
    pub operator: Vec<String>,
    /// The invariants.
    pub checks: Vec<Check>,
    /// Whether every check held.
    pub passed: bool,
    /// Order answers per second.
    pub timeline: Vec<Second>,
    /// The gateway sampled over time, every sale's together.
    pub samples: Vec<Sample>,
    /// The chaos schedule, when the run had one.
    pub chaos: Option<ChaosReport>,
}

/// One sale's figures.
#[derive(Debug, Serialize)]
pub struct SaleReport {
    /// The sale.
    pub sku: String,
    /// Users who came for it.
    pub users: u64,
    /// Its stock and orders.
    pub orders: Orders,
    /// The gateway's own admission decisions by outcome (from /metrics).
    pub gateway_admission: BTreeMap<String, u64>,
    /// Drain rate configured and achieved.
    pub drain: Drain,
    /// The line's fairness, when buyers were queued and served.
    pub fairness: Option<crate::fairness::Fairness>,
    /// The pre-queue's opening, when buyers joined one.
    pub opening: Option<crate::opening::Opening>,
    /// The gateway's look at it over time.
    pub samples: Vec<Sample>,
}

/// What a chaos schedule did.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    /// Its seed (`--seed` replays it).
    pub seed: u64,
    /// Faults injected before the crowd was done.
    pub injected: u32,
    /// Faults that could not be injected.
    pub errors: Vec<String>,
    /// The schedule, one line a fault.
    pub faults: Vec<String>,
}

/// Order requests offered, admitted and refused.
#[derive(Debug, Serialize)]
pub struct Funnel {
    /// Order requests sent (clicks and retries included, replays not).
    pub offered: u64,
    /// Answered 201 or 202.
    pub admitted: u64,
    /// Refused, by the contract's code.
    pub refused: BTreeMap<String, u64>,
}

/// Stock and orders at the end.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Orders {
    /// Stock before the crowd.
    pub stock_initial: u64,
    /// Stock after delivery settled.
    pub stock_final: u64,
    /// Distinct order ids users were told of.
    pub told_to_users: u64,
    /// Orders the backend applied.
    pub applied_at_backend: u64,
    /// Deliveries the backend saw again and absorbed by idempotency key (it counts every
    /// sale's together).
    pub redeliveries_absorbed: u64,
    /// Orders whose stock went back after delivery failed for good.
    pub compensations: u64,
    /// Orders the backend cancelled as unpaid, their units handed back.
    pub cancelled: u64,
}

/// Drain rate configured vs achieved.
#[derive(Debug, Serialize)]
pub struct Drain {
    /// Requests per second the sale is set to release.
    pub configured: f64,
    /// Requests per second released while requests waited (None: backlog under 1 s).
    pub achieved: Option<f64>,
    /// (achieved − configured) / configured, in percent.
    pub deviation_pct: Option<f64>,
    /// Seconds the queue held requests.
    pub window_seconds: Option<f64>,
}

impl Orders {
    /// Every sale's orders together.
    pub fn total(sales: &[SaleReport]) -> Self {
        sales.iter().fold(Self::default(), |t, s| Self {
            stock_initial: t.stock_initial + s.orders.stock_initial,
            stock_final: t.stock_final + s.orders.stock_final,
            told_to_users: t.told_to_users + s.orders.told_to_users,
            applied_at_backend: t.applied_at_backend + s.orders.applied_at_backend,
            // Counted by the backend for every sale at once: the same figure in each.
            redeliveries_absorbed: s.orders.redeliveries_absorbed,
            compensations: t.compensations + s.orders.compensations,
            cancelled: t.cancelled + s.orders.cancelled,
        })
    }
}

impl Funnel {
    /// The funnel of the order route from the answers tally.
    pub fn of(answers: &BTreeMap<(Route, String), u64>) -> Self {
        let mut f = Funnel {
            offered: 0,
            admitted: 0,
            refused: BTreeMap::new(),
        };
        for ((route, code), n) in answers {
            if *route != Route::Order {
                continue;
            }
            f.offered += n;
            if code == "ok" {
                f.admitted += n;
            } else {
                *f.refused.entry(code.clone()).or_default() += n;
            }
        }
        f
    }
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                n as f64 * 100.0 / of as f64
            }
        };
        let _ = writeln!(
            o,
            "== flashgate load test: {} ({} store) ==",
            self.scenario, self.store
        );
        if !self.description.is_empty() {
            let _ = writeln!(o, "{}", self.description.trim());
        }
        let _ = writeln!(
            o,
            "users {}   crowd {:.1} s   delivery settled after {:.1} s more",
            self.users, self.crowd_seconds, self.settle_seconds
        );
        let _ = writeln!(o, "\nusers by outcome");
        for (label, n) in &self.outcomes {
            let _ = writeln!(o, "  {label:<28} {n:>9}  {:>5.1}%", pct(*n, self.users));
        }
        let f = &self.funnel;
        let _ = writeln!(o, "\norder requests");
        let peak = self
            .timeline
            .iter()
            .map(|s| s.admitted + s.refused)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "  {:<28} {:>9}  (peak {peak} answers in one second)",
            "offered", f.offered
        );
        let _ = writeln!(
            o,
            "  {:<28} {:>9}  {:>5.1}%",
            "admitted",
            f.admitted,
            pct(f.admitted, f.offered)
        );
        for (code, n) in &f.refused {
            let _ = writeln!(
                o,
                "  {:<28} {n:>9}  {:>5.1}%",
                format!("refused {code}"),
                pct(*n, f.offered)
            );
        }
        let _ = writeln!(o, "\nall answers by route");
        for (route, codes) in &self.answers {
            let list: Vec<String> = codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(o, "  {route:<8} {}", list.join(", "));
        }
        let many = self.sales.len() > 1;
        let r = &self.orders;
        let _ = writeln!(o, "\nstock and orders");
        if many {
            let _ = writeln!(o, "  all sales: {}", r.line());
        }
        if self.backend_shed > 0 {
            let _ = writeln!(
                o,
                "  the backend shed {} deliveries with 503 (it held all it could)",
                self.backend_shed
            );
        }
        for sale in &self.sales {
            let _ = writeln!(o, "  {}: {}", sale.sku, sale.orders.line());
            if !sale.gateway_admission.is_empty() {
                let list: Vec<String> = sale
                    .gateway_admission
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                let _ = writeln!(o, "    gateway admission decisions: {}", list.join(", "));
            }
        }
        let _ = writeln!(
            o,
            "\nlatency (ms)          count      p50      p90      p99    p99.9      max"
        );
        for p in &self.latency {
            let _ = writeln!(
                o,
                "  {:<16} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                p.series.name(),
                p.count,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms
            );
        }
        for sale in &self.sales {
            o.push_str(&sale.render(many));
        }
        if !self.operator.is_empty() {
            let _ = writeln!(o, "\noperator");
            for line in &self.operator {
                let _ = writeln!(o, "  {line}");
            }
        }
        if let Some(c) = &self.chaos {
            let _ = writeln!(
                o,
                "\nchaos seed {}: {} faults injected (replay with --seed {})",
                c.seed, c.injected, c.seed
            );
            for f in &c.faults {
                let _ = writeln!(o, "  {f}");
            }
            for e in &c.errors {
                let _ = writeln!(o, "  not injected: {e}");
            }
        }
        let _ = writeln!(o, "\ninvariants");
        for c in &self.checks {
            let name = match c.sale.is_empty() || !many {
                true => c.name.to_owned(),
                false => format!("{}: {}", c.sale, c.name),
            };
            let _ = writeln!(
                o,
                "  [{}] {name:<46} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.detail
            );
        }
        let _ = writeln!(o, "\nresult: {}", if self.passed { "PASS" } else { "FAIL" });
        o
    }
}

impl Orders {
    /// The figures in one line.
    fn line(&self) -> String {
        format!(
            "stock {} -> {} ({} sold); users told of {} orders; backend applied {} (absorbed {} redeliveries); {} compensated; {} cancelled by the backend",
            self.stock_initial,
            self.stock_final,
            self.stock_initial.saturating_sub(self.stock_final),
            self.told_to_users,
            self.applied_at_backend,
            self.redeliveries_absorbed,
            self.compensations,
            self.cancelled
        )
    }
}

impl SaleReport {
    /// Its drain, fairness and opening as text; `named` when the run had several sales.
    fn render(&self, named: bool) -> String {
        let mut o = String::new();
        let title = |what: &str| match named {
            true => format!("\n{what}: {}", self.sku),
            false => format!("\n{what}"),
        };
        let d = &self.drain;
        let _ = writeln!(o, "{}", title("drain"));
        match (d.achieved, d.deviation_pct, d.window_seconds) {
            (Some(a), Some(dev), Some(w)) => {
                let _ = writeln!(
                    o,
                    "  configured {:.0}/s, achieved {a:.1}/s ({dev:+.2}%) over the {w:.1} s the queue held requests",
                    d.configured
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "  configured {:.0}/s; the queue held requests for under 1 s, too short to measure",
                    d.configured
                );
            }
        }
        let lag = self.samples.iter().map(|s| s.lag).fold(0.0, f64::max);
        let rates = self.samples.iter().map(|s| s.drain_rate);
        let (low, high) = rates.fold((f64::MAX, 0.0_f64), |(l, h), r| (l.min(r), h.max(r)));
        if low < high {
            let _ = writeln!(
                o,
                "  the rate in force went between {low:.0}/s and {high:.0}/s"
            );
        }
        let _ = writeln!(
            o,
            "  outbox lag at most {lag:.1} s (the oldest order the backend had not taken yet)"
        );
        if let Some(f) = &self.fairness {
            let _ = writeln!(
                o,
                "{}\n  {} buyers served; {:.2} % overtaken by one admitted ≥ 1 s later (largest gap {:.2} s); ETA error p50 {:.1} %, p90 {:.1} % (waits of 1 s or more)",
                title("fairness"),
                f.buyers,
                f.overtaken * 100.0,
                f.largest_gap.as_secs_f64(),
                f.eta_error_p50 * 100.0,
                f.eta_error_p90 * 100.0
            );
        }
        if let Some(opening) = &self.opening {
            o.push_str(&opening.render());
        }
        o
    }
}
