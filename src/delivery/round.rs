//! One round of the deliverer: for each sale, claim what is due from the outbox, POST it
//! (at most the limit in flight at once, only a probe while the breaker is open, nothing
//! while a backend's Retry-After holds), and settle
//! each order by the backend's verdict — confirmed, compensated, or left for a later round.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::limit::Sample;
use super::post::{post, standing, Attempt, Reply, Verdict};
use super::{Settings, State};
use crate::breaker::Permit;
use crate::log_throttle::warn_repeated;
use crate::sale::context::SaleContext;
use crate::sale::outcome::Outcome;
use crate::sale::Sale;
use crate::store::{Compensation, Confirmation, Order};
use crate::types::OrderId;

/// What settling an order did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// It left this deliverer's hands (settled here, or by another deliverer).
    Done,
    /// The store did not answer; it stays for the next round.
    Pending,
}

/// What one round did.
#[derive(Default)]
pub(super) struct Round {
    /// Orders that left the outbox (confirmed or compensated).
    pub(super) settled: usize,
    /// Orders still waiting (backing off, held by the breaker, or failed again).
    pub(super) waiting: usize,
}

/// One pass over every sale's outbox.
pub(super) async fn round(
    ctx: &Arc<SaleContext>,
    settings: &Arc<Settings>,
    state: &mut State,
) -> Round {
    let mut r = Round::default();
    let mut seen = HashSet::new();
    // Whether every order this deliverer holds was read this round: only then may it
    // forget what it remembers of orders it did not see.
    let mut complete = true;
    for sale in &ctx.sales.all() {
        // Orders taken over from gone instances are known as such before they are read.
        let claiming = state.claiming.clone().lock_owned().await;
        while let Ok(id) = state.taken.try_recv() {
            state.ambiguous.insert(id);
        }
        // Read past the orders that are backing off so newer ones are not starved.
        let window = state.limiter.limit().saturating_mul(8).max(64);
        let claimed = ctx
            .store
            .claim(&sale.sku, &settings.consumer, window, settings.claim_idle)
            .await;
        drop(claiming);
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                warn_repeated!("cannot read the outbox", sku = %sale.sku, error = %e);
                r.waiting += 1;
                complete = false;
                continue;
            }
        };
        seen.extend(claimed.orders.iter().map(|o| o.order_id));
        complete &= claimed.complete;
        state.ambiguous.extend(claimed.taken_over.iter().copied());
        let due = sort(ctx, sale, settings, state, claimed, &mut r).await;
        // While the breaker is open only a probe goes out; it ends with this round (a
        // result recorded it, or it is handed back for the next round). Nothing to send
        // takes no probe: a probe taken for nothing would be handed back.
        let breaker = state.breaker.clone();
        let now = Instant::now();
        // A backend's Retry-After holds everything, last asks included.
        let room = match state.resume_at.is_some_and(|at| at > now) {
            true => 0,
            false => state.limiter.allowed(now),
        };
        let permit = if due.batch.is_empty() || room == 0 {
            None
        } else {
            breaker.admit_at(now)
        };
        let allowed = match &permit {
            Some(Permit::Pass) => room,
            Some(Permit::Probe(_)) => 1,
            None => 0,
        };
        let offered = due.batch.len() + due.last_asks.len();
        let posts = choose(room, allowed, due, &mut r);
        if !posts.is_empty() {
            deliver(ctx, sale, settings, state, posts, offered, &mut r).await;
        }
        drop(permit);
    }
    // Orders that left this deliverer's hands elsewhere (taken over and settled by another
    // instance) are forgotten — only when it saw every order it holds: an acknowledgement
    // or an ambiguity forgotten too soon could give back stock the backend holds.
    if complete {
        state.backoff.retain(|o| seen.contains(o));
        state.acked.retain(|o| seen.contains(o));
        state.ambiguous.retain(|o| seen.contains(o));
    }
    let m = &ctx.metrics;
    m.outbox_backlog.set(r.waiting as i64);
    // Open means holding deliveries back now: past its cool-down, with nothing left to
    // probe with, it is not (a gauge stuck at 1 after the backend recovered would page).
    let open = state.breaker.holding_at(Instant::now());
    m.breaker_open
        .with_label_values(&["backend"])
        .set(i64::from(open));
    r
}

/// The orders claimed in one sale that are due for a POST.
struct Due {
    /// At their deadline: asked about one last time, before any other.
    last_asks: Vec<Order>,
    /// Due now by their backoff.
    batch: Vec<Order>,
}

/// Sorts claimed orders: acknowledged ones are confirmed, those out of retries
/// compensated, those backing off counted as waiting; the rest are due.
async fn sort(
    ctx: &SaleContext,
    sale: &Sale,
    settings: &Settings,
    state: &mut State,
    claimed: crate::store::Claimed,
    r: &mut Round,
) -> Due {
    let now = Instant::now();
    let deadline_ms = settings.deadline.as_millis() as u64;
    let mut due = Due {
        last_asks: Vec::new(),
        batch: Vec::new(),
    };
    for order in claimed.orders {
        // The store's clock stamped `reserved_at`; the store's clock judges it.
        let expired = claimed.now_ms.saturating_sub(order.reserved_at) > deadline_ms;
        // Out of retries: compensated at once, unless an attempt may have landed; then it
        // waits for its deadline and the backend's word like any other.
        let exhausted = settings.retries > 0
            && state.backoff.attempts(&order.order_id) >= settings.retries
            && !state.ambiguous.contains(&order.order_id);
        if state.acked.contains(&order.order_id) {
            // The backend has it: only the store's confirmation is missing.
            r.tally(settle(ctx, sale, settings, state, &order, Verdict::Accepted).await);
        } else if exhausted {
            tracing::warn!(order = %order.order_id, attempts = state.backoff.attempts(&order.order_id),
                "delivery gave up after its retries; compensating");
            r.tally(settle(ctx, sale, settings, state, &order, Verdict::Refused).await);
        } else if expired && state.backoff.due(&order.order_id, now) {
            due.last_asks.push(order);
        } else if expired {
            r.waiting += 1;
        } else if state.backoff.due(&order.order_id, now) {
            due.batch.push(order);
        } else {
            r.waiting += 1;
        }
    }
    // Fewest attempts first: while the breaker lets only a probe through, every order gets
    // its turn instead of the oldest one being tried again and again.
    due.batch
        .sort_by_key(|o| state.backoff.attempts(&o.order_id));
    due
}

/// What goes out now, each with whether it is a last ask: last asks first, then as many
/// due orders as the breaker `allowed`, `room` in all; the rest wait.
fn choose(room: usize, allowed: usize, due: Due, r: &mut Round) -> Vec<(Order, bool)> {
    let Due {
        mut last_asks,
        mut batch,
    } = due;
    let last_n = last_asks.len().min(room);
    r.waiting += last_asks.len() - last_n;
    last_asks.truncate(last_n);
    let normal_n = batch.len().min(allowed).min(room - last_n);
    r.waiting += batch.len() - normal_n;
    batch.truncate(normal_n);
    last_asks
        .into_iter()
        .map(|o| (o, true))
        .chain(batch.into_iter().map(|o| (o, false)))
        .collect()
}

/// POSTs `posts` side by side (of `offered` due) and settles each by its verdict; what
/// the answers say of the backend's load goes to the limit.
async fn deliver(
    ctx: &SaleContext,
    sale: &Sale,
    settings: &Arc<Settings>,
    state: &mut State,
    posts: Vec<(Order, bool)>,
    offered: usize,
    r: &mut Round,
) {
    // Renew our hold on them: nobody takes them over while the POSTs are in flight.
    let ids: Vec<OrderId> = posts.iter().map(|(o, _)| o.order_id).collect();
    let owned: HashSet<OrderId> = match ctx.store.touch(&sale.sku, &settings.consumer, &ids).await {
        Ok(owned) => owned.into_iter().collect(),
        Err(e) => {
            warn_repeated!("cannot renew the hold on orders; not posting them", sku = %sale.sku, error = %e);
            r.waiting += posts.len();
            return;
        }
    };
    let deadline_ms = settings.deadline.as_millis() as u64;
    let mut set = JoinSet::new();
    for (order, last) in posts {
        if !owned.contains(&order.order_id) {
            // Taken over by another deliverer: its to deliver now.
            state.backoff.done(&order.order_id);
            continue;
        }
        let settings = settings.clone();
        let expires_at = order.reserved_at.saturating_add(deadline_ms);
        set.spawn(async move {
            let attempt = post(&settings, &order, expires_at).await;
            (order, attempt, last)
        });
    }
    let mut samples = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        let Ok((order, attempt, last)) = joined else {
            r.waiting += 1;
            continue;
        };
        samples.push(Sample {
            latency: attempt.took,
            load: attempt.load(),
        });
        let m = &ctx.metrics;
        m.delivery_answers
            .with_label_values(&[attempt.class()])
            .inc();
        if let Some(wait) = attempt.retry_after.filter(|w| !w.is_zero()) {
            hold(ctx, settings, state, wait);
        }
        let Attempt { verdict, reply, .. } = attempt;
        answered(ctx, sale, settings, state, order, verdict, &reply, last, r).await;
    }
    state.limiter.record(&samples, offered, Instant::now());
    let m = &ctx.metrics;
    m.delivery_limit.set(state.limiter.limit() as i64);
    if let Some(noload) = state.limiter.noload() {
        m.delivery_noload.set(noload.as_secs_f64());
    }
}

/// A backend's `Retry-After` (bounded by `delivery.retry_max`) holds every delivery until
/// it has passed: the orders it refused, and every other.
fn hold(ctx: &SaleContext, settings: &Settings, state: &mut State, wait: std::time::Duration) {
    let until = Instant::now() + wait.min(settings.retry_max);
    if state.resume_at.is_none_or(|at| at < until) {
        if state.resume_at.is_none_or(|at| at <= Instant::now()) {
            ctx.metrics.delivery_holds.inc();
            tracing::warn!(
                seconds = wait.min(settings.retry_max).as_secs(),
                "the backend asked for a pause (Retry-After); holding every delivery"
            );
        }
        state.resume_at = Some(until);
    }
}

/// Acts on the backend's answer to one POST: counted, logged, then settled, retried later,
/// or (a last ask the backend never had) compensated.
#[allow(clippy::too_many_arguments)]
async fn answered(
    ctx: &SaleContext,
    sale: &Sale,
    settings: &Settings,
    state: &mut State,
    order: Order,
    verdict: Verdict,
    reply: &Reply,
    last: bool,
    r: &mut Round,
) {
    // One of DELIVERY_RESULTS.
    let result = match verdict {
        Verdict::Accepted => "confirmed",
        Verdict::Refused => "refused",
        Verdict::Retry => "retry",
        Verdict::Unknown => "unknown",
    };
    ctx.metrics.deliveries.with_label_values(&[result]).inc();
    if verdict == Verdict::Unknown {
        state.ambiguous.insert(order.order_id);
    }
    let id = order.order_id;
    let verdict = standing(verdict, reply, state.ambiguous.contains(&id));
    match verdict {
        Verdict::Accepted => {}
        Verdict::Refused => {
            warn_repeated!("the backend refused the order for good; compensating", order = %id, %reply)
        }
        Verdict::Retry | Verdict::Unknown => {
            warn_repeated!("delivery attempt failed; will retry", order = %id, %reply)
        }
    }
    match (verdict, last) {
        (Verdict::Retry, true) if !state.ambiguous.contains(&id) => {
            // No attempt ever reached the backend unanswered: it does not have the order,
            // and past the deadline it would refuse a late one.
            state.breaker.failure();
            tracing::warn!(order = %id,
                "delivery deadline passed and the backend did not take the order; compensating");
            r.tally(settle(ctx, sale, settings, state, &order, Verdict::Refused).await);
        }
        (Verdict::Retry | Verdict::Unknown, last) => {
            if last {
                tracing::warn!(order = %id,
                    "delivery deadline passed, but an earlier attempt may have reached the backend; \
                     asking again until it says");
            }
            state.breaker.failure();
            state.backoff.failed(id, Instant::now());
            r.waiting += 1;
        }
        (verdict, _) => {
            state.breaker.success();
            r.tally(settle(ctx, sale, settings, state, &order, verdict).await);
        }
    }
}

impl Round {
    fn tally(&mut self, s: Settled) {
        match s {
            Settled::Done => self.settled += 1,
            Settled::Pending => self.waiting += 1,
        }
    }
}

/// Applies the backend's verdict to the store and the ticket.
async fn settle(
    ctx: &SaleContext,
    sale: &Sale,
    settings: &Settings,
    state: &mut State,
    order: &Order,
    verdict: Verdict,
) -> Settled {
    let id = &order.order_id;
    let settled = match verdict {
        Verdict::Retry | Verdict::Unknown => return Settled::Pending,
        Verdict::Accepted => {
            // Remembered until the store confirms: an acknowledged order is never undone.
            state.acked.insert(*id);
            match ctx.store.confirm(&sale.sku, id, &settings.consumer).await {
                Ok(Confirmation::Confirmed | Confirmation::AlreadyConfirmed) => {
                    ctx.order_settled(id, Outcome::Confirmed(*id));
                    Settled::Done
                }
                Ok(Confirmation::Compensated) => {
                    // Its stock went back although the backend holds it: the one thing
                    // this module exists to prevent. Loud, counted, alerted on.
                    tracing::error!(order = %id, "the backend accepted an order whose stock was already restored");
                    ctx.metrics.delivery_conflicts.inc();
                    ctx.order_settled(id, Outcome::Confirmed(*id));
                    Settled::Done
                }
                Ok(Confirmation::NotOwner | Confirmation::Unknown) => Settled::Done,
                Err(e) => {
                    warn_repeated!("cannot confirm a delivered order; will confirm it again", order = %id, error = %e);
                    Settled::Pending
                }
            }
        }
        Verdict::Refused => {
            match ctx
                .store
                .compensate(&sale.sku, id, &settings.consumer)
                .await
            {
                Ok(result) => {
                    match result {
                        Compensation::Restored { remaining } => {
                            sale.set_remaining(remaining);
                            {
                                let c = &sale.counters;
                                c.compensations.inc();
                            }
                            tracing::warn!(order = %id, "order not delivered; stock restored");
                            ctx.order_settled(id, Outcome::Failed(*id));
                        }
                        Compensation::AlreadyFailed => ctx.order_settled(id, Outcome::Failed(*id)),
                        Compensation::Confirmed => ctx.order_settled(id, Outcome::Confirmed(*id)),
                        Compensation::NotOwner | Compensation::Unknown => {}
                    }
                    Settled::Done
                }
                Err(e) => {
                    warn_repeated!("cannot compensate a refused order", order = %id, error = %e);
                    Settled::Pending
                }
            }
        }
    };
    if settled == Settled::Done {
        state.backoff.done(id);
        state.acked.remove(id);
        state.ambiguous.remove(id);
    }
    settled
}
