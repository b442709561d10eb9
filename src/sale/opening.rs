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
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::context::SaleContext;
use super::drain::conclude;
use super::outcome::Outcome;
use super::prequeue::Member;
use super::ticket::TicketStatus;
use super::Sale;
use crate::log_throttle::warn_repeated;
use crate::store::lease::LEASE_PERIOD;
use crate::store::Spend;

/// Members asked about in one store call.
const BATCH: usize = 1000;

/// Tokens spent as sold out in one store call.
const SPEND_BATCH: usize = 500;

/// Runs `sale`'s opening until `shutdown`: ranks its pre-queue at `starts_at` and any
/// member that joins later.
pub async fn run(ctx: Arc<SaleContext>, sale: Arc<Sale>, shutdown: CancellationToken) {
    if !until_the_opening(&sale, &shutdown).await {
        return;
    }
    // The first opening asks the store even without members here: it seals the fleet's
    // pre-queue at the earliest clock, so later arrivals anywhere come after it.
    let mut first = true;
    loop {
        // Not cancelled midway: members taken out are always put back, ranked or not.
        let due = first || sale.prequeue.has_unranked();
        if due && !open(&ctx, &sale, first).await {
            tokio::select! {
                () = tokio::time::sleep(LEASE_PERIOD) => continue,
                () = shutdown.cancelled() => return,
            }
        }
        first = false;
        tokio::select! {
            () = sale.prequeue.joined_late() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Waits for the opening of `sale`'s pre-queue: false if the sale ended or the gateway is
/// stopping first. The terms may change meanwhile (an operator moving the sale, adding or
/// taking away its pre-queue): each change is waited for afresh.
async fn until_the_opening(sale: &Sale, shutdown: &CancellationToken) -> bool {
    let mut changes = sale.watch_changes();
    loop {
        if sale.is_ended() {
            return false;
        }
        let terms = sale.terms();
        let wait = match (terms.prequeue_opens(), terms.starts()) {
            (Some(_), Some(starts)) => starts.duration_since(SystemTime::now()).ok(),
            // No pre-queue (yet): only a change can give it one.
            _ => Some(Duration::MAX),
        };
        let Some(wait) = wait else {
            return true;
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(Duration::from_secs(86_400))) => {
                if terms.prequeue_opens().is_some() {
                    return true;
                }
            }
            // Another instance opened first: its clock runs ahead of ours.
            () = sale.prequeue.sealed_elsewhere() => return true,
            changed = changes.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            () = shutdown.cancelled() => return false,
        }
    }
}

/// Ranks the members waiting to be ranked (`first`: at the opening, timed in
/// `flashgate_prequeue_shuffle_seconds`); `false` when the store could not be asked (those
/// not ranked are put back) or the sale is held or paused.
async fn open(ctx: &Arc<SaleContext>, sale: &Arc<Sale>, first: bool) -> bool {
    // Held, the store lost the sale: what is left to sell is unknown until an operator
    // loads stock, and the places kept are reckoned from it. Paused, an operator may be
    // changing it.
    if sale.is_held() || sale.is_paused() {
        return false;
    }
    let began = Instant::now();
    let members = sale.prequeue.take_joined();
    // Stock-aware admission, at this moment: the first `keep` places may reserve.
    let keep = sale.admissible();
    let mut dropped = Vec::new();
    let ok = match ctx.shared {
        false => {
            for (number, member) in sale.prequeue.number_locally(members) {
                match number <= keep {
                    true => place(ctx, sale, member, Some(number)),
                    false => dropped.push(member),
                }
            }
            true
        }
        true => rank_in_fleet(ctx, sale, members, keep, &mut dropped).await,
    };
    // Told apart, so that members joining just after the opening are not ranked late
    // behind thousands of store writes (the cursor does not wait for them). They keep
    // their places in the queue until told: a stopping drain waits for them.
    if !dropped.is_empty() {
        tokio::spawn(sold_out(ctx.clone(), sale.clone(), dropped));
    }
    // The opening proper (not a member that joined after it) is what the metric times.
    if first && ok {
        sale.counters
            .prequeue_shuffle
            .set(began.elapsed().as_secs_f64());
    }
    sale.queue.wake();
    ok
}

/// Asks the store for the members' places in the fleet's pre-queue, a batch at a time;
/// those beyond the places kept go to `dropped`. Members the store does not know (it lost
/// the pre-queue) are ranked by their own keys after the others, kept as far as `keep`
/// allows beyond the places the store kept, and released at this instance's pace (counted
/// as the line's fallbacks).
async fn rank_in_fleet(
    ctx: &Arc<SaleContext>,
    sale: &Arc<Sale>,
    members: Vec<Member>,
    keep: u64,
    dropped: &mut Vec<Member>,
) -> bool {
    let seal_only = members.is_empty();
    let mut members = members.into_iter().peekable();
    let mut unknown = Vec::new();
    // Places the store kept, and those it gave this instance's members (a place given
    // twice, the store having lost one, goes to the first member only).
    let mut kept_in_store = 0;
    let mut given = std::collections::HashSet::new();
    while seal_only || members.peek().is_some() {
        let batch: Vec<Member> = members.by_ref().take(BATCH).collect();
        let users: Vec<_> = batch.iter().map(|m| m.item.user.clone()).collect();
        match ctx.store.open_prequeue(&sale.sku, &users, keep).await {
            Ok(opening) => {
                sale.line.seen(opening.cursor, opening.admitted);
                let kept = opening.sealed.kept.unwrap_or(opening.sealed.size);
                kept_in_store = kept;
                for (member, place_in) in batch.into_iter().zip(opening.places) {
                    let place_in = place_in.filter(|p| given.insert(*p));
                    match place_in {
                        Some(p) if p <= kept => {
                            place(ctx, sale, member, Some(opening.sealed.base + p));
                        }
                        Some(_) => dropped.push(member),
                        None => unknown.push(member),
                    }
                }
                if seal_only {
                    break;
                }
            }
            Err(e) => {
                warn_repeated!("cannot open the pre-queue", sku = %sale.sku, error = %e);
                sale.prequeue
                    .put_back(batch.into_iter().chain(members).chain(unknown));
                return false;
            }
        }
    }
    // What stock-aware admission leaves beyond the places the store kept.
    let keep = keep.saturating_sub(kept_in_store);
    unknown.sort_unstable_by_key(|m| m.key);
    for (rank, member) in (1..).zip(unknown) {
        match rank <= keep {
            true => place(ctx, sale, member, None),
            false => dropped.push(member),
        }
    }
    true
}

/// Puts a ranked member in its place (`number`; `None` when the store lost the
/// pre-queue: local order, after the ranked).
fn place(ctx: &Arc<SaleContext>, sale: &Sale, member: Member, number: Option<u64>) {
    let mut item = member.item;
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

/// Tells the members beyond the places kept sold out, once their tokens are spent so in
/// the store (the answer stands for the token, on every instance, whatever comes later).
/// A store that does not answer leaves the tokens unspent: those members are told
/// `store_unavailable` (they may send the token again).
async fn sold_out(ctx: Arc<SaleContext>, sale: Arc<Sale>, dropped: Vec<Member>) {
    let mut dropped = dropped.into_iter().peekable();
    while dropped.peek().is_some() {
        let batch: Vec<Member> = dropped.by_ref().take(SPEND_BATCH).collect();
        let spends: Vec<Spend> = batch
            .iter()
            .map(|m| Spend {
                token: m.item.token,
                user: m.item.user.clone(),
                ticket: m.item.ticket,
            })
            .collect();
        let outcome = match ctx.store.spend_sold_out(&sale.sku, &spends).await {
            Ok(()) => Outcome::SoldOut,
            Err(e) => {
                warn_repeated!("cannot record the pre-queue's sold-out answers", sku = %sale.sku, error = %e);
                Outcome::StoreUnavailable
            }
        };
        for member in batch {
            sale.prequeue.dropped();
            sale.queue.give_back_place();
            conclude(&ctx, &sale, member.item, outcome);
        }
    }
}
