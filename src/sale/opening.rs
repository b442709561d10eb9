//! The opening of a sale with a pre-queue ([`super::prequeue`]): at `starts_at` its
//! members are ranked — by the store, one permutation for the whole fleet, or here by
//! their keys — and stock-aware admission applies at that moment: members ranked beyond
//! remaining × admit_factor are told sold out at once; the others see their place and ETA
//! and are released by the drain in that order, ahead of every later arrival.
//!
//! One task a sale with a pre-queue. It ranks at the opening, and again whenever a member
//! joins after it (a request that read the clock just before the opening); a store that
//! cannot be asked is asked again a period later.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::context::SaleContext;
use super::drain::conclude;
use super::outcome::Outcome;
use super::prequeue::Member;
use super::ticket::TicketStatus;
use super::Sale;
use crate::log_throttle::warn_repeated;
use crate::store::lease::LEASE_PERIOD;

/// Tickets asked about in one store call.
const BATCH: usize = 1000;

/// Runs `sale`'s opening until `shutdown`: ranks its pre-queue at `starts_at` and any
/// member that joins later.
pub async fn run(ctx: Arc<SaleContext>, sale: Arc<Sale>, shutdown: CancellationToken) {
    let Some(starts) = sale.starts() else {
        return;
    };
    if let Ok(wait) = starts.duration_since(SystemTime::now()) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
    loop {
        // Not cancelled midway: members taken out are always put back, ranked or not.
        if sale.prequeue.has_unranked() && !open(&ctx, &sale).await {
            tokio::select! {
                () = tokio::time::sleep(LEASE_PERIOD) => continue,
                () = shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            () = sale.prequeue.joined_late() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Ranks the members waiting to be ranked; `false` when the store could not be asked
/// (those not ranked are put back).
async fn open(ctx: &Arc<SaleContext>, sale: &Arc<Sale>) -> bool {
    let began = Instant::now();
    let members = sale.prequeue.take_joined();
    let size = members.len();
    // Stock-aware admission, at this moment: the first `keep` places may reserve.
    let keep = sale.admissible();
    let ok = match ctx.shared {
        false => {
            for (number, member) in sale.prequeue.number_locally(members) {
                place(ctx, sale, member, Some(number), number <= keep);
            }
            true
        }
        true => rank_in_fleet(ctx, sale, members, keep).await,
    };
    if let (Some(c), true) = (ctx.counters(&sale.sku), size > 0) {
        c.prequeue_shuffle.set(began.elapsed().as_secs_f64());
    }
    sale.queue.wake();
    ok
}

/// Asks the store for the members' places in the fleet's pre-queue, a batch at a time.
async fn rank_in_fleet(
    ctx: &Arc<SaleContext>,
    sale: &Arc<Sale>,
    members: Vec<Member>,
    keep: u64,
) -> bool {
    let mut members = members.into_iter().peekable();
    while members.peek().is_some() {
        let batch: Vec<Member> = members.by_ref().take(BATCH).collect();
        let tickets: Vec<_> = batch.iter().map(|m| m.item.ticket).collect();
        match ctx.store.open_prequeue(&sale.sku, &tickets, keep).await {
            Ok(opening) => {
                sale.line.seen(opening.cursor, opening.admitted);
                let kept = opening.sealed.kept.unwrap_or(opening.sealed.size);
                for (member, place_in) in batch.into_iter().zip(opening.places) {
                    let number = place_in.map(|p| opening.sealed.base + p);
                    let keeps = place_in.is_none_or(|p| p <= kept);
                    place(ctx, sale, member, number, keeps);
                }
            }
            Err(e) => {
                warn_repeated!("cannot open the pre-queue", sku = %sale.sku, error = %e);
                sale.prequeue.put_back(batch.into_iter().chain(members));
                return false;
            }
        }
    }
    true
}

/// Puts a ranked member in its place (`number`; `None` when the store lost the
/// pre-queue: local order, after the ranked), or tells it sold out when not `kept`.
fn place(ctx: &Arc<SaleContext>, sale: &Sale, member: Member, number: Option<u64>, kept: bool) {
    let mut item = member.item;
    if !kept {
        sale.prequeue.dropped();
        sale.queue.give_back_place();
        conclude(ctx, sale, item, Outcome::SoldOut);
        return;
    }
    item.line = number;
    item.admitted_at = Instant::now();
    item.promised_ms = sale.place(item.seq, number).1;
    if let Some(n) = number {
        ctx.tickets.set_line(&item.ticket, n);
        if !ctx.shared {
            // Without a shared store, this instance's line is the pre-queue's order.
            sale.line.seen(0, n);
        }
    }
    ctx.tickets.update(&item.ticket, TicketStatus::Queued);
    sale.prequeue.rank(number, item);
}
