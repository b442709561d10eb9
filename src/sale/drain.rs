//! Drain and order workers: per sale, queued requests are released at `drain_rate` per
//! second (governor's GCRA, bursts of 10 ms worth but at least 2) to at most `workers`
//! concurrent store steps, in admission order.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::context::SaleContext;
use super::outcome::Outcome;
use super::queue::{Head, QueueItem};
use super::ticket::TicketStatus;
use super::Sale;
use crate::store::{Reservation, ReserveRequest};

/// The longest a stopping drain waits for an admission to fill its slot in.
const FILLING_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

fn limiter(rate: u32) -> DefaultDirectRateLimiter {
    let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    // With a burst of 1 the loop sleeps until the exact next slot, and the timer's lateness
    // (up to a millisecond) is lost every time: 100/s drained at 90/s. A burst of 2 lets
    // the loop take a slot while it is still ahead of schedule, so lateness is absorbed.
    let burst = NonZeroU32::new(rate.div_ceil(100).max(2)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
}

/// Runs one sale's drain until `shutdown`; then refuses what is still queued with
/// `shutting_down` and waits for the steps in flight, so every admitted request is answered.
pub async fn run(ctx: Arc<SaleContext>, sale: Arc<Sale>, shutdown: CancellationToken) {
    let workers = Arc::new(Semaphore::new(sale.settings.workers));
    let mut rate = sale.watch_rate();
    let mut paused = sale.watch_paused();
    let mut draining = sale.watch_draining();
    let mut bucket = limiter(*rate.borrow_and_update());
    let clock = DefaultClock::default();
    loop {
        if *paused.borrow_and_update() || !*draining.borrow_and_update() {
            tokio::select! {
                _ = paused.changed() => continue,
                _ = draining.changed() => continue,
                () = shutdown.cancelled() => break,
            }
        }
        // Numbers given back at the head would hold their ring slots until the next item.
        sale.queue.pass_given_back();
        if sale.queue.is_empty() {
            tokio::select! {
                () = sale.queue.wait_ready() => {}
                _ = paused.changed() => {}
                _ = rate.changed() => bucket = limiter(*rate.borrow_and_update()),
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        if let Err(not_until) = bucket.check() {
            let wait = not_until.wait_time_from(clock.now());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = rate.changed() => bucket = limiter(*rate.borrow_and_update()),
                _ = paused.changed() => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        let permit = tokio::select! {
            p = workers.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let item = match sale.queue.pop() {
            Head::Item(item) => item,
            // The next request's admission is filling its slot in (a moment): wait for it,
            // so requests leave in admission order.
            Head::Filling | Head::Empty => {
                drop(permit);
                tokio::select! {
                    () = sale.queue.wait_ready() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        ctx.tickets.update(&item.ticket, TicketStatus::Processing);
        if let Some(c) = ctx.counters(&sale.sku) {
            c.drained.inc();
            c.queue_wait
                .observe(item.admitted_at.elapsed().as_secs_f64());
        }
        tokio::spawn(work(ctx.clone(), sale.clone(), item, permit));
    }
    // Nothing is admitted from now on, and every request admitted so far is answered: a
    // number taken and not yet filled in is waited for (briefly: its admission is a few
    // instructions from pushing or giving it back).
    sale.stop();
    loop {
        match sale.queue.pop() {
            Head::Item(item) => conclude(&ctx, &sale, item, Outcome::ShuttingDown),
            Head::Empty if sale.queue.is_empty() => break,
            Head::Filling | Head::Empty => {
                let _ = tokio::time::timeout(FILLING_WAIT, sale.queue.wait_ready()).await;
            }
        }
    }
    let all = u32::try_from(sale.settings.workers).unwrap_or(u32::MAX);
    let _ = workers.acquire_many(all).await;
}

/// One order worker: the store step for one admitted request, then its outcome.
async fn work(
    ctx: Arc<SaleContext>,
    sale: Arc<Sale>,
    item: QueueItem,
    _permit: OwnedSemaphorePermit,
) {
    let req = ReserveRequest {
        sku: sale.sku.clone(),
        user: item.user.clone(),
        token: item.token,
        quantity: item.quantity,
        per_user_limit: sale.per_user_limit,
    };
    // The store is behind the breaker, which bounds the call by the store timeout.
    let outcome = match ctx.store.reserve(&req).await {
        Ok(reply) => {
            // A replay reports what was decided then; the stock figure is not news.
            if !reply.replayed {
                match reply.outcome {
                    Reservation::Reserved { remaining, .. } => {
                        sale.set_remaining(remaining);
                        ctx.outbox_ready.notify_one();
                    }
                    Reservation::SoldOut { remaining } => sale.set_remaining(remaining),
                    Reservation::LimitReached | Reservation::InvalidToken => {}
                }
            }
            Outcome::of_reply(&reply)
        }
        Err(e) => {
            tracing::warn!(sku = %sale.sku, error = %e, "reserve step failed");
            Outcome::StoreUnavailable
        }
    };
    conclude(&ctx, &sale, item, outcome);
}

/// Records an admitted request's outcome and tells whoever waits for it.
fn conclude(ctx: &SaleContext, sale: &Sale, item: QueueItem, outcome: Outcome) {
    if let Some(c) = ctx.counters(&sale.sku) {
        c.reserve(outcome.label());
    }
    ctx.tickets
        .update(&item.ticket, TicketStatus::Done(outcome));
    if let Some(reply) = item.reply {
        let _ = reply.send(outcome);
    }
    sale.finish();
}
