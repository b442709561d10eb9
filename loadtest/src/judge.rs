//! After the crowd: one sale's evidence gathered from the store, the backend and every
//! instance's metrics, and judged against its invariants.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use crate::cancels::Cancels;
use crate::check::{self, Applied, Check, Evidence};
use crate::report::{Drain, Orders, SaleReport};
use crate::sampler::{self, Sample};
use crate::scenario::{FaultKind, Scenario, Wave};
use crate::stack::Stack;
use crate::user::Journey;

/// What every sale's judging shares: the run as a whole.
pub struct Run<'a> {
    /// What ran.
    pub stack: &'a Stack,
    /// As the scenario said.
    pub scenario: &'a Scenario,
    /// Every user's journey, whatever sale it was for.
    pub journeys: &'a [Journey],
    /// Requests of the whole run that got no answer.
    pub unanswered_requests: u64,
    /// `store_unavailable` answers of the whole run.
    pub store_unavailable_answers: u64,
    /// The chaos schedule, when the run had one.
    pub faults: Option<&'a [crate::chaos::Planned]>,
    /// Every instance's Prometheus text at the end (empty: it did not answer).
    pub metrics: &'a [String],
    /// When the crowd started.
    pub start: Instant,
}

/// One sale's part of the run.
pub struct Sale<'a> {
    /// Its wave of the crowd, and what the scenario promises of it.
    pub wave: &'a Wave,
    /// Its stock before the crowd, and the most units one user was allowed (`terms`).
    pub terms: (u64, u32),
    /// Whether its delivery settled in time.
    pub settled: bool,
    /// The backend's cancels of its orders.
    pub cancels: &'a Cancels,
    /// How the gateway looked while it went.
    pub samples: &'a [Sample],
}

impl Run<'_> {
    fn summed(&self, name: &str, labels: &str) -> f64 {
        // A fold from +0: an empty f64 sum is -0, which prints as "-0".
        self.metrics
            .iter()
            .filter_map(|m| sampler::metric(m, name, labels))
            .fold(0.0, |a, b| a + b)
    }
}

/// Judges one sale: its checks (each naming it) and its part of the report.
pub async fn sale(run: &Run<'_>, s: Sale<'_>) -> Result<(SaleReport, Vec<Check>), String> {
    let stack = run.stack;
    let sku = s.wave.sku.as_str();
    let (stock_initial, per_user_limit) = s.terms;
    let stock_final = stack.store_stock(sku).await?;
    let (ledger, redeliveries) = backend_ledger(stack, sku).await?;
    let journeys: Vec<Journey> = run
        .journeys
        .iter()
        .filter(|j| j.sku == sku)
        .cloned()
        .collect();
    let label = format!("sku=\"{sku}\"");
    // Orders users were told of that the backend does not have: compensated in the store?
    let applied: HashSet<&str> = ledger.iter().map(|a| a.order_id.as_str()).collect();
    let mut compensated = Vec::new();
    for id in journeys.iter().flat_map(|j| j.orders.iter()) {
        if !applied.contains(id.as_str())
            && stack.order_state(sku, id).await == Some(flashgate::store::OrderState::Failed)
        {
            compensated.push(id.clone());
        }
    }
    let health = check::Health {
        breakers_open: run.summed("flashgate_circuit_breaker_open", "breaker=\"store\"")
            + run.summed("flashgate_circuit_breaker_open", "breaker=\"backend\""),
        pending_deliveries: stack.pending_deliveries(sku).await.unwrap_or(u64::MAX),
        delivery_conflicts: run.summed("flashgate_delivery_conflicts_total", ""),
        sales_held: run.summed("flashgate_sale_held", &label),
        instances_answering: run.metrics.iter().filter(|m| !m.is_empty()).count(),
        instances: stack.instances.len(),
    };
    let arrivals = stack.demo.arrivals(sku);
    let fairness = crate::fairness::measure(&crate::fairness::served(&journeys, run.start));
    let opening = crate::opening::Opening::measure(&journeys, run.start).map(|mut o| {
        // The slowest instance's opening: its members ranked, the others told sold out.
        o.shuffle_s = run
            .metrics
            .iter()
            .filter_map(|m| sampler::metric(m, "flashgate_prequeue_shuffle_seconds", &label))
            .fold(0.0, f64::max);
        o
    });
    // The rate the sale ran at: the highest configured while it went (an event may raise it).
    let configured = s.samples.iter().map(|x| x.drain_rate).fold(0.0, f64::max);
    let mut expect = run.scenario.expect.clone();
    expect.sold_out = s.wave.sold_out;
    expect.resold = s.wave.resold;
    let cancelling = run.scenario.backend.cancel_rate > 0.0;
    let mut checks = check::all(&Evidence {
        journeys: &journeys,
        unanswered_requests: run.unanswered_requests,
        stock_initial,
        stock_final,
        per_user_limit,
        ledger: &ledger,
        settled: s.settled,
        store_unavailable_answers: run.store_unavailable_answers,
        expect: &expect,
        compensated: &compensated,
        gateways_killed: run
            .faults
            .is_some_and(|p| p.iter().any(|f| f.kind == FaultKind::GatewayRestart)),
        health: run.faults.is_some().then_some(&health),
        arrivals_ms: &arrivals,
        drain_rate: configured as u32,
        fairness,
        opening: opening.as_ref(),
        cancels: cancelling.then_some(s.cancels),
        cancellations_counted: run.summed("flashgate_cancellations_total", &label) as u64,
    });
    for c in &mut checks {
        c.sale = sku.to_owned();
    }
    let achieved = sampler::achieved_drain(s.samples);
    let report = SaleReport {
        sku: sku.to_owned(),
        users: s.wave.users,
        orders: Orders {
            stock_initial,
            stock_final,
            told_to_users: journeys.iter().map(|j| j.orders.len() as u64).sum(),
            applied_at_backend: ledger.len() as u64,
            redeliveries_absorbed: redeliveries,
            compensations: run.summed("flashgate_compensations_total", &label) as u64,
            cancelled: s.cancels.cancelled.len() as u64,
        },
        // Every instance's decisions together, as the crowd's answers are.
        gateway_admission: run.metrics.iter().fold(BTreeMap::new(), |mut all, m| {
            let one =
                sampler::metric_by(m, "flashgate_admission_decisions_total", &label, "outcome");
            for (outcome, n) in one {
                *all.entry(outcome).or_default() += n;
            }
            all
        }),
        drain: Drain {
            configured,
            achieved: achieved.map(|a| a.0),
            deviation_pct: achieved
                .filter(|_| configured > 0.0)
                .map(|a| (a.0 - configured) * 100.0 / configured),
            window_seconds: achieved.map(|a| a.1),
        },
        fairness,
        opening,
        samples: s.samples.to_vec(),
    };
    Ok((report, checks))
}

/// The sale's stock before the crowd and the most units one user was allowed: from the
/// store for a sale that existed at the start, else from the definition it was created
/// with; the limit the highest any definition of the run gave (the file's, the events',
/// the one in force at the end), so that a limit raised mid-sale is not a violation.
pub async fn terms(
    stack: &Stack,
    scenario: &Scenario,
    sku: &str,
    at_start: Option<u64>,
) -> Result<(u64, u32), String> {
    let now = stack.admin_get(&format!("/admin/sales/{sku}")).await?;
    let definition = &now["definition"];
    let stock = match at_start {
        Some(units) => units,
        None => definition["stock"]
            .as_u64()
            .ok_or_else(|| format!("/admin/sales/{sku} shows no stock: {now}"))?,
    };
    let from_file = stack
        .config
        .sales
        .iter()
        .filter(|s| s.sku.as_str() == sku)
        .map(|s| s.per_user_limit);
    let from_events = scenario.events.iter().filter_map(|e| match &e.action {
        crate::operator::Action::PutSale { sale, .. } if e.action.creates() == Some(sku) => sale
            .get("per_user_limit")
            .and_then(toml::Value::as_integer)
            .and_then(|n| u32::try_from(n).ok()),
        _ => None,
    });
    let in_force = definition["per_user_limit"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok());
    let limit = from_file
        .chain(from_events)
        .chain(in_force)
        .max()
        .ok_or_else(|| format!("no definition of `{sku}` names its per-user limit"))?;
    Ok((stock, limit))
}

/// Waits until every instance's outbox is empty and the backend holds every unit the store
/// sold of `sku`.
pub async fn settle_delivery(stack: &Stack, sku: &str, initial: u64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        // Every instance's backlog (one that does not answer is not settled).
        let mut backlog = Some(0.0);
        for m in stack.all_metrics().await {
            let b = m
                .ok()
                .and_then(|m| sampler::metric(&m, "flashgate_outbox_backlog", ""));
            backlog = backlog.zip(b).map(|(a, b)| a + b);
        }
        let stock = stack.store_stock(sku).await.ok();
        let applied = backend_ledger(stack, sku).await.ok();
        let pending = stack.pending_deliveries(sku).await.ok();
        if let (Some(backlog), Some(stock), Some((ledger, _)), Some(0)) =
            (backlog, stock, applied, pending)
        {
            if backlog == 0.0 && check::standing_units(&ledger) == initial.saturating_sub(stock) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The backend's orders for `sku`, and how many redeliveries it absorbed (of every sale).
async fn backend_ledger(stack: &Stack, sku: &str) -> Result<(Vec<Applied>, u64), String> {
    let v = stack.backend_get("/orders/ledger").await?;
    let all: Vec<Applied> =
        serde_json::from_value(v["orders"].clone()).map_err(|e| format!("/orders/ledger: {e}"))?;
    let dups = v["duplicates"].as_u64().unwrap_or(0);
    Ok((all.into_iter().filter(|a| a.sku == sku).collect(), dups))
}
