//! The invariants every run must keep, checked against what the crowd was told, what the
//! store holds and what the backend applied.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::scenario::Expect;
use crate::user::{Journey, Outcome};

/// One order as the demo backend applied it (`GET /orders/ledger`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Applied {
    /// The order id (the delivery's idempotency key).
    pub order_id: String,
    /// The sale.
    pub sku: String,
    /// The buyer.
    pub user_id: String,
    /// Units.
    pub quantity: u64,
    /// Cancelled since (unpaid): its units went back through the gateway.
    #[serde(default)]
    pub cancelled: bool,
}

/// Units of the orders standing at the backend (applied and not cancelled).
pub fn standing_units(ledger: &[Applied]) -> u64 {
    ledger
        .iter()
        .filter(|a| !a.cancelled)
        .map(|a| a.quantity)
        .sum()
}

/// Everything the checks look at.
pub struct Evidence<'a> {
    /// Every user's journey.
    pub journeys: &'a [Journey],
    /// Requests that got no answer.
    pub unanswered_requests: u64,
    /// Stock before the crowd.
    pub stock_initial: u64,
    /// Stock in the store after delivery settled.
    pub stock_final: u64,
    /// Units one user may buy.
    pub per_user_limit: u32,
    /// The backend's orders for this sale.
    pub ledger: &'a [Applied],
    /// Whether delivery settled (outbox empty, backend caught up) within the allowed time.
    pub settled: bool,
    /// Answers `store_unavailable` the crowd got.
    pub store_unavailable_answers: u64,
    /// The scenario's own promises.
    pub expect: &'a Expect,
    /// Orders users were told of that the store records as compensated (their stock went
    /// back after delivery failed for good).
    pub compensated: &'a [String],
    /// Whether gateway instances were killed during the run: requests in flight to them
    /// went unanswered (a user then tries another instance), which is no broken promise.
    pub gateways_killed: bool,
    /// How the system stands at the end of a chaos run.
    pub health: Option<&'a Health>,
    /// When each of the sale's orders first reached the backend (Unix ms, ascending).
    pub arrivals_ms: &'a [u64],
    /// The sale's configured drain rate: the total across instances.
    pub drain_rate: u32,
    /// The line's fairness, when buyers were queued and served.
    pub fairness: Option<crate::fairness::Fairness>,
    /// The pre-queue's opening, when buyers joined one.
    pub opening: Option<&'a crate::opening::Opening>,
    /// The backend's cancels, when it cancelled a share of its orders.
    pub cancels: Option<&'a crate::cancels::Cancels>,
    /// Cancels the gateways counted as taking effect (`flashgate_cancellations_total`).
    pub cancellations_counted: u64,
}

/// How the system stands once a chaos run is over: whatever happened, it must have
/// recovered by itself.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Circuit breakers (store and backend, every instance) still open.
    pub breakers_open: f64,
    /// Entries pending in the deliverers' group (taken and never acknowledged).
    pub pending_deliveries: u64,
    /// Orders the backend accepted whose stock had been restored.
    pub delivery_conflicts: f64,
    /// Instances holding the sale as if the store had lost it.
    pub sales_held: f64,
    /// Instances whose metrics answered at the end.
    pub instances_answering: usize,
    /// Instances in the run.
    pub instances: usize,
}

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The sale it is about (empty: the whole run).
    pub sale: String,
    /// What must hold.
    pub name: &'static str,
    /// Whether it did.
    pub ok: bool,
    /// The figures behind the verdict.
    pub detail: String,
}

/// A verdict about the whole run (`all` is about one sale: its caller names it).
pub fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check {
        sale: String::new(),
        name,
        ok,
        detail,
    }
}

/// Runs every check.
pub fn all(e: &Evidence<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    let stuck = e
        .journeys
        .iter()
        .filter(|j| matches!(j.outcome, Outcome::Unanswered | Outcome::Unfinished))
        .count();
    out.push(check(
        "every request answered",
        (e.unanswered_requests == 0 || e.gateways_killed) && stuck == 0,
        format!(
            "{} requests without an answer{}, {stuck} users unanswered or unfinished",
            e.unanswered_requests,
            if e.gateways_killed {
                " (gateways were killed under them)"
            } else {
                ""
            }
        ),
    ));
    out.push(check(
        "delivery settled",
        e.settled,
        if e.settled {
            "outbox empty and the backend holds every sold unit".into()
        } else {
            "the outbox did not drain to the backend in time".into()
        },
    ));

    let sold = e.stock_initial.saturating_sub(e.stock_final);
    let applied_units: u64 = e.ledger.iter().map(|a| a.quantity).sum();
    let standing = standing_units(e.ledger);
    out.push(check(
        "reserved == stock sold",
        standing == sold && e.stock_final <= e.stock_initial,
        format!(
            "stock {} -> {}: {sold} sold; backend applied {applied_units} units, {} cancelled, {standing} standing",
            e.stock_initial,
            e.stock_final,
            applied_units - standing
        ),
    ));
    if let Some(c) = e.cancels {
        cancel_checks(e, c, &mut out);
    }

    let mut ids = HashSet::new();
    let repeated = e
        .ledger
        .iter()
        .filter(|a| !ids.insert(a.order_id.as_str()))
        .count();
    let failed: HashSet<&str> = e
        .journeys
        .iter()
        .flat_map(|j| j.failed_orders.iter().map(String::as_str))
        .chain(e.compensated.iter().map(String::as_str))
        .collect();
    let known: HashSet<&str> = e
        .journeys
        .iter()
        .flat_map(|j| j.orders.iter().map(String::as_str))
        .collect();
    let missing = known
        .iter()
        .filter(|id| !ids.contains(*id) && !failed.contains(*id))
        .count();
    out.push(check(
        "every order delivered exactly once",
        repeated == 0 && missing == 0,
        format!(
            "{} orders at the backend, {repeated} applied twice; {} orders told to users, {} compensated, {missing} neither delivered nor compensated",
            e.ledger.len(),
            known.len(),
            known.iter().filter(|id| failed.contains(*id)).count()
        ),
    ));

    let mut units: HashMap<&str, u64> = HashMap::new();
    for a in e.ledger.iter().filter(|a| !a.cancelled) {
        *units.entry(a.user_id.as_str()).or_default() += a.quantity;
    }
    let limit = u64::from(e.per_user_limit);
    let over_backend = units.values().filter(|n| **n > limit).count();
    let over_told = e
        .journeys
        .iter()
        .filter(|j| j.orders.len() as u64 > limit)
        .count();
    out.push(check(
        "no user above its limit",
        over_backend == 0 && over_told == 0,
        format!(
            "limit {limit}: {over_backend} users above it at the backend, {over_told} told of more orders"
        ),
    ));

    let by_user: HashMap<&str, &Journey> =
        e.journeys.iter().map(|j| (j.user.as_str(), j)).collect();
    let unheard: Vec<&Applied> = e
        .ledger
        .iter()
        .filter(|a| !known.contains(a.order_id.as_str()))
        .collect();
    let unexplained: Vec<&&Applied> = unheard
        .iter()
        .filter(|a| {
            by_user
                .get(a.user_id.as_str())
                .is_none_or(|j| !j.lost_reply_possible || !j.orders.is_empty())
        })
        .collect();
    let examples: Vec<String> = unexplained
        .iter()
        .take(3)
        .map(|a| {
            let told = by_user
                .get(a.user_id.as_str())
                .map_or(String::new(), |j| format!(" (told of {:?})", j.orders));
            format!("{} of {}{told}", a.order_id, a.user_id)
        })
        .collect();
    out.push(check(
        "no order nobody asked for",
        unexplained.is_empty(),
        format!(
            "{} backend orders no user was told of, {} of them without a lost reply to explain them{}",
            unheard.len(),
            unexplained.len(),
            if examples.is_empty() { String::new() } else { format!(": {}", examples.join("; ")) }
        ),
    ));

    let mismatches: u32 = e.journeys.iter().map(|j| j.mismatches).sum();
    let said: Vec<String> = e
        .journeys
        .iter()
        .filter(|j| j.mismatches > 0)
        .take(3)
        .map(|j| format!("{}: {}", j.user, j.disagreed.join(", ")))
        .collect();
    out.push(check(
        "same token, same answer",
        mismatches == 0,
        format!(
            "{mismatches} answers to a repeated token disagreed with the first{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.join("; "))
            }
        ),
    ));

    if let Some(h) = e.health {
        out.push(check(
            "recovered by itself",
            h.breakers_open == 0.0 && h.sales_held == 0.0 && h.instances_answering == h.instances,
            format!(
                "{} breakers still open, {} instances holding the sale, {}/{} instances answering",
                h.breakers_open, h.sales_held, h.instances_answering, h.instances
            ),
        ));
        out.push(check(
            "no delivery left pending",
            h.pending_deliveries == 0,
            format!(
                "{} entries pending in the deliverers' group",
                h.pending_deliveries
            ),
        ));
        out.push(check(
            "no acknowledged order compensated",
            h.delivery_conflicts == 0.0,
            format!("{} delivery conflicts", h.delivery_conflicts),
        ));
    }

    if e.expect.resold {
        let resold = applied_units.saturating_sub(e.stock_initial);
        let handed_back = e
            .cancels
            .map_or(0, |c| c.cancelled.iter().filter(|(_, r)| *r).count());
        out.push(check(
            "cancelled units sold again (scenario)",
            resold > 0 && handed_back > 0,
            format!(
                "{handed_back} orders cancelled with their units back; the backend applied {applied_units} units of a stock of {}: {resold} sold again",
                e.stock_initial
            ),
        ));
    }
    if e.expect.sold_out {
        out.push(check(
            "sold out (scenario)",
            e.stock_final == 0,
            format!("{} units left", e.stock_final),
        ));
    }
    if let Some(burst) = e.expect.burst_limit {
        // The float product of a whole rate and 1.1 lands a hair above the whole number
        // it means (200 × 1.1 = 220.00000000000003): not a unit of slack to round up to.
        let limit = (f64::from(e.drain_rate) * burst - 1e-9).ceil().max(0.0) as usize;
        let (peak, at) = peak_in_window(e.arrivals_ms, 1000);
        let when = match (at, e.arrivals_ms.first()) {
            (Some(at), Some(first)) => {
                format!(
                    " (from {:.1} s after the first)",
                    (at - first) as f64 / 1000.0
                )
            }
            _ => String::new(),
        };
        out.push(check(
            "backend never above the drain rate (scenario)",
            peak <= limit,
            format!(
                "peak {peak} orders in one second{when}; limit {limit} (configured {}/s × {burst})",
                e.drain_rate
            ),
        ));
    }
    if let Some(tolerance) = e.expect.drain_tolerance {
        let configured = f64::from(e.drain_rate);
        let (ok, detail) = match achieved_rate(e.arrivals_ms) {
            Some((achieved, span)) => {
                let deviation = (achieved - configured) / configured;
                (
                    deviation.abs() <= tolerance,
                    format!(
                        "achieved {achieved:.1}/s ({} orders over {span:.2} s), configured {configured:.0}/s: {:+.2}% (tolerance ±{:.1}%)",
                        e.arrivals_ms.len(),
                        deviation * 100.0,
                        tolerance * 100.0
                    ),
                )
            }
            None => (
                false,
                format!(
                    "{} orders at the backend: too few to measure a rate (configured {configured:.0}/s)",
                    e.arrivals_ms.len()
                ),
            ),
        };
        out.push(check("drain rate held in total (scenario)", ok, detail));
    }
    fairness_checks(e, &mut out);
    if let Some(max) = e.expect.winners_mean_gap_max {
        let (ok, detail) = match e.opening {
            Some(o) => (
                o.winners > 0 && o.mean_gap() <= max,
                format!(
                    "{} winners of {} pre-queued buyers; their mean joining time {:.2} s against everyone's {:.2} s (at most {:.2} s apart)",
                    o.winners,
                    o.joined,
                    o.mean_won_s,
                    o.mean_joined_s,
                    max.as_secs_f64()
                ),
            ),
            None => (false, "no buyer joined a pre-queue".into()),
        };
        out.push(check(
            "winners drawn whatever their joining time (scenario)",
            ok,
            detail,
        ));
    }
    if e.expect.store_outage_seen {
        out.push(check(
            "store outage reached the crowd (scenario)",
            e.store_unavailable_answers > 0,
            format!("{} store_unavailable answers", e.store_unavailable_answers),
        ));
    }
    out
}

/// The scenario's promises about the line: nobody overtaken by much, honest ETAs.
/// The backend's cancels: every one taken, once, each handing its units back.
fn cancel_checks(e: &Evidence<'_>, c: &crate::cancels::Cancels, out: &mut Vec<Check>) {
    let not_restocked = c.cancelled.iter().filter(|(_, r)| !r).count();
    let first: Vec<String> = c
        .failures
        .iter()
        .take(3)
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    out.push(check(
        "every cancel handed its unit back once",
        c.failures.is_empty()
            && not_restocked == 0
            && e.cancellations_counted == c.cancelled.len() as u64,
        format!(
            "{} cancelled ({not_restocked} without their units back), {} counted by the gateways, {} refused{}",
            c.cancelled.len(),
            e.cancellations_counted,
            c.failures.len(),
            if first.is_empty() { String::new() } else { format!(": {}", first.join("; ")) }
        ),
    ));
}

fn fairness_checks(e: &Evidence<'_>, out: &mut Vec<Check>) {
    let f = e.fairness;
    if let Some(max) = e.expect.overtaken_max {
        let (ok, detail) = match f {
            Some(f) => (
                f.overtaken <= max,
                format!(
                    "{:.2} % of {} buyers served after one admitted ≥ 1 s later (largest gap {:.2} s; at most {:.1} %)",
                    f.overtaken * 100.0,
                    f.buyers,
                    f.largest_gap.as_secs_f64(),
                    max * 100.0
                ),
            ),
            None => (false, "no buyer was queued and served".into()),
        };
        out.push(check("served in the fleet's order (scenario)", ok, detail));
    }
    if let Some(max) = e.expect.eta_error_p90_max {
        let (ok, detail) = match f {
            Some(f) => (
                f.eta_error_p90 <= max,
                format!(
                    "ETA error p50 {:.1} %, p90 {:.1} % (at most {:.1} %)",
                    f.eta_error_p50 * 100.0,
                    f.eta_error_p90 * 100.0,
                    max * 100.0
                ),
            ),
            None => (false, "no buyer was queued and served".into()),
        };
        out.push(check("honest ETAs (scenario)", ok, detail));
    }
}

/// The most of `sorted` (ascending ms) that fall within one sliding window of `window_ms`
/// (half-open: a window starting at t holds t up to t + window_ms, exclusive), and where
/// the first such window starts.
pub fn peak_in_window(sorted: &[u64], window_ms: u64) -> (usize, Option<u64>) {
    let mut best = (0, None);
    let mut end = 0;
    // The busiest window can always start at an arrival: slide its start over them.
    for (start, &t) in sorted.iter().enumerate() {
        end = end.max(start);
        while end < sorted.len() && sorted[end] < t.saturating_add(window_ms) {
            end += 1;
        }
        if end - start > best.0 {
            best = (end - start, Some(t));
        }
    }
    best
}

/// The rate `sorted` (ascending ms) arrived at, first to last: (arrivals − 1) / span, and
/// the span in seconds. None for fewer than two, or all in one millisecond.
pub fn achieved_rate(sorted: &[u64]) -> Option<(f64, f64)> {
    let (first, last) = (sorted.first()?, sorted.last()?);
    let span = last.checked_sub(*first).filter(|s| *s > 0)? as f64 / 1000.0;
    Some(((sorted.len() - 1) as f64 / span, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey(user: &str, orders: &[&str]) -> Journey {
        Journey {
            user: user.into(),
            sku: "a".into(),
            outcome: if orders.is_empty() {
                Outcome::SoldOut
            } else {
                Outcome::Reserved
            },
            orders: orders.iter().map(|s| s.to_string()).collect(),
            failed_orders: Vec::new(),
            mismatches: 0,
            disagreed: Vec::new(),
            lost_reply_possible: false,
            admitted: None,
            served: None,
            prequeued_at: None,
        }
    }

    fn applied(id: &str, user: &str) -> Applied {
        Applied {
            order_id: id.into(),
            sku: "s".into(),
            user_id: user.into(),
            quantity: 1,
            cancelled: false,
        }
    }

    fn failures(journeys: &[Journey], ledger: &[Applied], stock_final: u64) -> Vec<&'static str> {
        let expect = Expect {
            sold_out: true,
            ..Expect::default()
        };
        let e = Evidence {
            journeys,
            unanswered_requests: 0,
            stock_initial: 2,
            stock_final,
            per_user_limit: 1,
            ledger,
            settled: true,
            store_unavailable_answers: 0,
            expect: &expect,
            compensated: &[],
            gateways_killed: false,
            health: None,
            arrivals_ms: &[],
            drain_rate: 1,
            fairness: None,
            opening: None,
            cancels: None,
            cancellations_counted: 0,
        };
        all(&e)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_clean_sale_passes() {
        let j = [
            journey("a", &["o1"]),
            journey("b", &["o2"]),
            journey("c", &[]),
        ];
        let l = [applied("o1", "a"), applied("o2", "b")];
        assert_eq!(failures(&j, &l, 0), Vec::<&str>::new());
    }

    #[test]
    fn a_cancelled_order_stands_no_more() {
        // Two sold, one cancelled with its unit back: one standing, stock 2 -> 1.
        let js = [journey("a", &["o1"]), journey("b", &["o2"])];
        let mut ledger = vec![applied("o1", "a"), applied("o2", "b")];
        ledger[1].cancelled = true;
        assert!(!failures(&js, &ledger, 1).contains(&"reserved == stock sold"));
        // The unit never came back to the store: one sold too many.
        assert!(failures(&js, &ledger, 0).contains(&"reserved == stock sold"));
    }

    #[test]
    fn an_oversell_or_a_lost_order_fails() {
        let j = [
            journey("a", &["o1"]),
            journey("b", &["o2"]),
            journey("c", &["o3"]),
        ];
        let l = [applied("o1", "a"), applied("o2", "b"), applied("o3", "c")];
        assert_eq!(failures(&j, &l, 0), ["reserved == stock sold"]);
        let l = [applied("o1", "a")];
        let f = failures(&j[..2], &l, 0);
        assert!(f.contains(&"reserved == stock sold"), "{f:?}");
        assert!(f.contains(&"every order delivered exactly once"), "{f:?}");
    }

    #[test]
    fn a_user_above_the_limit_or_a_double_delivery_fails() {
        let j = [journey("a", &["o1", "o2"])];
        let l = [applied("o1", "a"), applied("o2", "a")];
        assert_eq!(failures(&j, &l, 0), ["no user above its limit"]);
        let j = [journey("a", &["o1"])];
        let l = [applied("o1", "a"), applied("o1", "a")];
        assert!(failures(&j, &l, 0).contains(&"every order delivered exactly once"));
    }

    #[test]
    fn an_order_nobody_heard_of_needs_a_lost_reply() {
        let mut j = [journey("a", &["o1"]), journey("b", &[])];
        let l = [applied("o1", "a"), applied("o2", "b")];
        assert_eq!(failures(&j, &l, 0), ["no order nobody asked for"]);
        j[1].lost_reply_possible = true;
        assert_eq!(failures(&j, &l, 0), Vec::<&str>::new());
    }

    #[test]
    fn disagreeing_replays_unsold_stock_and_silence_fail() {
        let mut j = [journey("a", &["o1"])];
        j[0].mismatches = 1;
        let l = [applied("o1", "a")];
        let f = failures(&j, &l, 1);
        assert!(f.contains(&"same token, same answer"), "{f:?}");
        assert!(f.contains(&"sold out (scenario)"), "{f:?}");
        j[0].mismatches = 0;
        j[0].outcome = Outcome::Unfinished;
        assert!(failures(&j, &l, 1).contains(&"every request answered"));
    }

    #[test]
    fn the_busiest_second_is_found_wherever_it_starts() {
        assert_eq!(peak_in_window(&[], 1000), (0, None));
        assert_eq!(peak_in_window(&[5], 1000), (1, Some(5)));
        // A window holds [t, t + 1000): 1000 ms after the first is the next window's.
        assert_eq!(peak_in_window(&[0, 999, 1000], 1000), (2, Some(0)));
        // The busiest second straddles two calendar seconds.
        let at = [0, 100, 900, 950, 1000, 1050, 1850, 1899, 3000];
        assert_eq!(peak_in_window(&at, 1000), (6, Some(900)));
        // Ties keep the first window; equal stamps all count.
        assert_eq!(
            peak_in_window(&[10, 10, 10, 2000, 2000], 1000),
            (3, Some(10))
        );
        // An even pace of 200/s shows 200 in any second.
        let even: Vec<u64> = (0..1000).map(|i| i * 5).collect();
        assert_eq!(peak_in_window(&even, 1000).0, 200);
    }

    #[test]
    fn the_rate_is_counted_between_the_first_and_last_arrival() {
        assert_eq!(achieved_rate(&[]), None);
        assert_eq!(achieved_rate(&[7]), None);
        assert_eq!(achieved_rate(&[7, 7]), None);
        let even: Vec<u64> = (0..=1000).map(|i| 1_000_000 + i * 5).collect();
        assert_eq!(achieved_rate(&even), Some((200.0, 5.0)));
    }

    fn drain_failures(arrivals: &[u64], rate: u32) -> Vec<&'static str> {
        let expect = Expect {
            drain_tolerance: Some(0.05),
            burst_limit: Some(1.1),
            ..Expect::default()
        };
        let j = [journey("a", &[])];
        let e = Evidence {
            journeys: &j,
            unanswered_requests: 0,
            stock_initial: 0,
            stock_final: 0,
            per_user_limit: 1,
            ledger: &[],
            settled: true,
            store_unavailable_answers: 0,
            expect: &expect,
            compensated: &[],
            gateways_killed: false,
            health: None,
            arrivals_ms: arrivals,
            drain_rate: rate,
            fairness: None,
            opening: None,
            cancels: None,
            cancellations_counted: 0,
        };
        all(&e)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_burst_or_a_slow_drain_fails_the_drain_checks() {
        // 200/s for 5 s: both hold.
        let even: Vec<u64> = (0..=1000).map(|i| i * 5).collect();
        assert_eq!(drain_failures(&even, 200), Vec::<&str>::new());
        // 220 in a second is the limit at 200/s × 1.1; 221 is above it.
        let mut burst = even.clone();
        burst.extend((0..20).map(|i| 2000 + i));
        burst.sort_unstable();
        assert_eq!(drain_failures(&burst, 200), Vec::<&str>::new());
        burst.push(2500);
        burst.sort_unstable();
        assert!(
            drain_failures(&burst, 200).contains(&"backend never above the drain rate (scenario)")
        );
        // The same orders over twice the time: half the rate.
        let slow: Vec<u64> = (0..=1000).map(|i| i * 10).collect();
        assert_eq!(
            drain_failures(&slow, 200),
            ["drain rate held in total (scenario)"]
        );
        assert_eq!(
            drain_failures(&[1], 200),
            ["drain rate held in total (scenario)"]
        );
    }
}
