//! Placing an order: the protocol from a parsed order request to its first answer. Every
//! refusal before the queue is decided here, in process, from atomics and the token's
//! signature; the store is read only for a token this instance has no answer for (its
//! recorded outcome, paid with a rate credit) and, with a shared store, to hold the token
//! for the request it queues ([`super::hold`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::admission::{self, Unspent};
use super::context::SaleContext;
use super::hold::{hold, is_stale, let_go, Held, HoldGuard};
use super::lookup::current_state;
use super::outcome::Outcome;
use super::prequeue::{Claim, PreQueue};
use super::queue::QueueItem;
use super::ticket::TicketStatus;
use super::{Sale, SaleState};
use crate::cluster::peers::Peers;
use crate::config::{Overflow, ResponseMode};
use crate::error::{GatewayError, Refusal};
use crate::log_throttle::warn_repeated;
use crate::store::{Entry, Replay};
use crate::types::{unix_millis, TicketId, Token, UserId};

/// One order request, parsed: who, with which token, for how many units.
pub struct Order {
    /// The sale it is for.
    pub sale: Arc<Sale>,
    /// The buyer, from the identity header.
    pub user: UserId,
    /// The one-time token, its signature not checked yet.
    pub token: Token,
    /// Units asked for (at most the sale's per-user limit).
    pub quantity: u32,
    /// The client's address, for the per-IP limit.
    pub ip: IpAddr,
}

/// What became of an order that was not refused.
#[derive(Debug)]
pub enum Placed {
    /// Queued under `ticket` at place `seq`: follow the ticket.
    Queued {
        /// The request's ticket.
        ticket: TicketId,
        /// Its place in the sale's queue.
        seq: u64,
        /// Its number in the fleet's line (shared store).
        line: Option<u64>,
    },
    /// In the sale's pre-queue under this ticket: its place is drawn at the opening.
    Prequeued(TicketId),
    /// Its token is queued already under this ticket (maybe on another instance).
    Joined(TicketId),
    /// Decided: the outcome, under the ticket it answers for.
    Decided(Outcome, TicketId),
    /// No room: the queue, or the book of unfinished tickets, is full.
    QueueFull,
}

/// Places `order`: refused, answered from what is known of its token, or queued (and, in
/// wait mode, waited for up to the sale's `max_wait`). `peers` when the store is shared.
pub async fn place(
    ctx: &Arc<SaleContext>,
    peers: Option<&Peers>,
    order: Order,
) -> Result<Placed, GatewayError> {
    let Order {
        sale,
        user,
        token,
        quantity,
        ip,
    } = order;
    // Forged, another user's or another sale's: refused here, before any state is read.
    if ctx.tokens.check_binding(&token, &sale.sku, &user).is_err() {
        count(&sale, "invalid_token");
        return Err(GatewayError::InvalidToken);
    }
    if let Some(answer) = answered_before(ctx, peers, &sale, &token, &user, ip).await? {
        return Ok(answer);
    }
    if sale.state(SystemTime::now()) == SaleState::Prequeue {
        // Boxed, as are the other rare steps below: a future holds room for its largest
        // step, and every order's future is moved and allocated whole.
        return Box::pin(prequeue(ctx, peers, &sale, user, token, quantity, ip)).await;
    }
    // Declared before the slot, so dropped after it: a number given back is given back
    // before its hold is let go.
    let mut held = None;
    let decided = Instant::now();
    // Every refusal at the edge is decided here, before any store step: the checks, then
    // a place in the queue, numbered on arrival (one atomic each), so that this instance
    // keeps its arrivals' order even when the store answers their holds out of order (it
    // stalled). Only then, with a shared store, is the token held for this request (the
    // same token may reach another instance too, and must be queued once): meanwhile the
    // drain waits for the slot to be filled or given back, at most a store call.
    let numbered = admission::precheck(ctx, &sale, &user, ip, SystemTime::now())
        .and_then(|()| {
            let ticket = ctx.tokens.new_ticket(&ctx.owner, &sale.sku);
            admission::take_place(ctx, &sale, ticket)
        })
        .and_then(admission::Place::number);
    ctx.metrics
        .admission_seconds
        .observe(decided.elapsed().as_secs_f64());
    let slot = match numbered {
        Ok(slot) => slot,
        Err(refusal) => return refused(ctx, peers, &sale, &token, &user, ip, refusal).await,
    };
    if let Some(peers) = peers {
        match hold(ctx, peers, &sale, &token, &user, slot.ticket(), Entry::Back).await? {
            Held::Here(guard) => held = Some(guard),
            Held::Queued(other) => return Ok(Placed::Joined(other)),
            Held::Spent(outcome) => return Ok(remember(ctx, &sale, &user, token, outcome)),
        }
    }
    queue(ctx, &sale, held, slot, user, token, quantity).await
}

/// Joins `sale`'s pre-queue, before the opening: refused only by the rate limits, a full
/// queue (the pre-queue shares its capacity) or a stopping drain. With a shared store the
/// token is held for it, in the same step that enters it in the fleet's pre-queue (a second
/// request with the token, on any instance, joins this one).
async fn prequeue(
    ctx: &Arc<SaleContext>,
    peers: Option<&Peers>,
    sale: &Arc<Sale>,
    user: UserId,
    token: Token,
    quantity: u32,
    ip: IpAddr,
) -> Result<Placed, GatewayError> {
    let mut held = None;
    let ticket = ctx.tokens.new_ticket(&ctx.owner, &sale.sku);
    // One place a buyer: a user in the pre-queue already (another token) is refused, the
    // token left for later (a double click of the same token was joined above). With a
    // shared store, the store decides it, fleet-wide, in the hold.
    let claim = match ctx.shared {
        true => None,
        false => match sale.prequeue.claim(&user, ticket) {
            Ok(claim) => Some(claim),
            Err(first) => {
                return Err(GatewayError::PrequeuePlaceTaken {
                    ticket: first.to_string(),
                })
            }
        },
    };
    let decided = Instant::now();
    let place = admission::check_rate(ctx, &user, ip)
        .and_then(|()| admission::take_place(ctx, sale, ticket))
        // After the place: a stopping drain either sees it, or this sees the stop.
        .and_then(|place| match sale.is_stopped() {
            true => Err(Refusal::ShuttingDown),
            false => Ok(place),
        });
    ctx.metrics
        .admission_seconds
        .observe(decided.elapsed().as_secs_f64());
    let place = match place {
        Ok(place) => place,
        Err(refusal) => return refused(ctx, peers, sale, &token, &user, ip, refusal).await,
    };
    let key = PreQueue::draw_key();
    if let Some(peers) = peers {
        match hold(
            ctx,
            peers,
            sale,
            &token,
            &user,
            ticket,
            Entry::Prequeue(key),
        )
        .await?
        {
            Held::Here(guard) => held = Some(guard),
            Held::Queued(other) => return Ok(Placed::Joined(other)),
            Held::Spent(outcome) => return Ok(remember(ctx, sale, &user, token, outcome)),
        }
    }
    // The store had sealed the pre-queue already (this instance's clock is behind): the
    // sale is open, and this is an ordinary arrival, numbered in the line, which stock-aware
    // admission may refuse.
    let number = held.as_ref().and_then(HoldGuard::line);
    if number.is_some() {
        sale.prequeue.open_now();
        if !sale.has_room_for_one_more() {
            if let Some(guard) = held.take() {
                guard.disarm();
            }
            // Let go before the refusal reads the token: held, it would be joined.
            let_go(ctx, sale, &token, &user, &ticket).await?;
            return refused(ctx, peers, sale, &token, &user, ip, Refusal::SoldOut).await;
        }
    }
    let item = QueueItem {
        seq: PREQUEUED,
        ticket,
        user,
        token,
        quantity,
        line: number,
        promised_ms: number.map_or(0, |n| sale.place(PREQUEUED, Some(n)).1),
        admitted_at: Instant::now(),
        reply: None,
        held: held.is_some(),
    };
    Ok(enter_prequeue(ctx, sale, item, key, held, place, claim))
}

/// Puts `item` in the pre-queue under its random `key` (or, numbered, in the line behind
/// it) with its ticket, keeping its place, its claim to the user's one place and its hold;
/// a book full of unfinished tickets refuses it as a full queue (what it holds is given
/// back).
fn enter_prequeue(
    ctx: &SaleContext,
    sale: &Sale,
    item: QueueItem,
    key: u64,
    held: Option<HoldGuard>,
    place: admission::Place<'_>,
    claim: Option<Claim<'_>>,
) -> Placed {
    let ticket = item.ticket;
    if !ctx.tickets.open(
        ticket,
        sale.sku.clone(),
        PREQUEUED,
        item.user.clone(),
        item.token,
    ) {
        count_full(sale);
        return Placed::QueueFull;
    }
    sale.begin();
    place.keep();
    if let Some(claim) = claim {
        claim.keep();
    }
    let placed = match item.line {
        Some(n) => {
            count(sale, "admitted");
            ctx.tickets.set_line(&ticket, n);
            sale.prequeue.add_numbered(n, item);
            sale.queue.wake();
            Placed::Queued {
                ticket,
                seq: PREQUEUED,
                line: Some(n),
            }
        }
        None => {
            count(sale, "prequeued");
            ctx.tickets.update(&ticket, TicketStatus::Prequeued);
            sale.prequeue.join(key, item);
            Placed::Prequeued(ticket)
        }
    };
    // In the pre-queue: its outcome decides what becomes of the hold.
    if let Some(guard) = held {
        guard.disarm();
    }
    placed
}

/// The queue number of a request in the pre-queue, which holds no number in the queue's
/// ring: past every number, so that a place reckoned from it is at the back.
const PREQUEUED: u64 = u64::MAX;

/// An outcome the store recorded for `token`, given now: remembered as a finished ticket
/// of this instance (when the book has room), so that the token's next submission here,
/// and a poll of the ticket, are answered without a store call.
fn remember(
    ctx: &SaleContext,
    sale: &Sale,
    user: &UserId,
    token: Token,
    outcome: Outcome,
) -> Placed {
    let ticket = ctx.tokens.new_ticket(&ctx.owner, &sale.sku);
    ctx.answers
        .remember(ticket, sale.sku.clone(), user.clone(), token, outcome);
    Placed::Decided(outcome, ticket)
}

/// Queues an admitted order in its `slot`, under the token's hold if `held`; in wait mode
/// waits for its outcome up to the sale's `max_wait`. (`held` comes first: a slot given
/// back is dropped before its hold is let go.)
async fn queue(
    ctx: &SaleContext,
    sale: &Sale,
    held: Option<HoldGuard>,
    mut slot: admission::Slot<'_>,
    user: UserId,
    token: Token,
    quantity: u32,
) -> Result<Placed, GatewayError> {
    let (seq, ticket) = (slot.seq(), slot.ticket());
    let line = held.as_ref().and_then(HoldGuard::line);
    if !ctx
        .tickets
        .open(ticket, sale.sku.clone(), seq, user.clone(), token)
    {
        // Every remembered ticket is still unfinished: as good as a full queue (the dropped
        // slot goes back).
        count_full(sale);
        return Ok(Placed::QueueFull);
    }
    if let Some(line) = line {
        ctx.tickets.set_line(&ticket, line);
    }
    count(sale, "admitted");
    let terms = sale.terms();
    let (reply, outcome) = match terms.settings.response {
        ResponseMode::Wait => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        ResponseMode::Async => (None, None),
    };
    if held.is_some() {
        slot.mark_held();
    }
    let promised = sale.place(seq, line).1;
    slot.fill(user, token, quantity, line, promised, reply);
    // Queued: the drain lets go of the hold if the outcome leaves the token unspent.
    if let Some(guard) = held {
        guard.disarm();
    }
    if let Some(rx) = outcome {
        if let Ok(Ok(outcome)) = tokio::time::timeout(terms.settings.max_wait, rx).await {
            return Ok(Placed::Decided(outcome, ticket));
        }
    }
    Ok(Placed::Queued { ticket, seq, line })
}

/// A refusal at the edge, unless the token was spent already: a token this instance has no
/// answer for may have been, and before a final refusal contradicts its outcome, that
/// outcome is read from the store. Only a refusal that stands is counted as one (a token
/// spent now as sold out is refused sold out; an earlier order is a replay).
async fn refused(
    ctx: &SaleContext,
    peers: Option<&Peers>,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    ip: IpAddr,
    refusal: Refusal,
) -> Result<Placed, GatewayError> {
    if matches!(refusal, Refusal::QueueFull) {
        count_full(sale);
        return Ok(Placed::QueueFull);
    }
    let replayed = match admission::replay_first(&refusal) {
        Some(unspent) => {
            // The read costs a rate credit, so a refused client cannot make the gateway
            // read the store at its own pace.
            if let Err(limited) = admission::check_rate(ctx, user, ip) {
                count(sale, limited.label());
                return Err(limited.into());
            }
            match Box::pin(replay_unless_stale(ctx, peers, sale, token, user, unspent)).await {
                Ok(replayed) => replayed,
                Err(e) => {
                    count(sale, refusal.label());
                    return Err(e);
                }
            }
        }
        None => Replay::Unknown,
    };
    let stands = match (&refusal, &replayed) {
        (_, Replay::Unknown) => true,
        (Refusal::SoldOut, Replay::Spent(reply)) => {
            matches!(Outcome::of_reply(reply), Outcome::SoldOut)
        }
        (_, Replay::Spent(_) | Replay::Queued(_)) => false,
    };
    if stands {
        count(sale, refusal.label());
    }
    match replayed {
        Replay::Spent(reply) => Ok(remember(ctx, sale, user, *token, Outcome::of_reply(&reply))),
        // A request queued with it (maybe on another instance) decides it: join it.
        Replay::Queued(ticket) => Ok(Placed::Joined(ticket)),
        Replay::Unknown => Err(refusal.into()),
    }
}

/// [`replay`], except that a hold whose request is gone (see [`super::hold`]) is let go and
/// the token replayed again: a dead request can no longer decide the token, and joining it
/// would send the buyer from `ticket_lost` back to the same ticket until the hold ran out.
async fn replay_unless_stale(
    ctx: &SaleContext,
    peers: Option<&Peers>,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    unspent: Unspent,
) -> Result<Replay, GatewayError> {
    let replayed = replay(ctx, sale, token, user, unspent).await?;
    let (Replay::Queued(other), Some(peers)) = (&replayed, peers) else {
        return Ok(replayed);
    };
    if !is_stale(ctx, peers, other).await {
        return Ok(replayed);
    }
    let_go(ctx, sale, token, user, other).await?;
    replay(ctx, sale, token, user, unspent).await
}

/// What the store knows of `token`: its first outcome if spent, the ticket of the queued
/// request holding it; a store that does not answer is `store_unavailable`.
async fn replay(
    ctx: &SaleContext,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    unspent: Unspent,
) -> Result<Replay, GatewayError> {
    ctx.replay(sale, token, user, unspent).await.map_err(|e| {
        warn_repeated!("cannot read a token's outcome", sku = %sale.sku, error = %e);
        GatewayError::StoreUnavailable
    })
}

/// A token this instance answered before, or an expired one: its first answer again (the
/// ticket book's, else the store's, read with a rate credit); `None` for a fresh token.
async fn answered_before(
    ctx: &SaleContext,
    peers: Option<&Peers>,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    ip: IpAddr,
) -> Result<Option<Placed>, GatewayError> {
    // A token seen before gets its first answer again, whatever the sale's state now: a
    // double click joins the request already queued, a resubmission after the sale sold
    // out still learns it won.
    if let Some((ticket, t)) = ctx.ticket_of_token(token) {
        if t.user == *user && t.sku == sale.sku && t.status.binds_token() {
            return Ok(Some(match t.status {
                TicketStatus::Prequeued => Placed::Prequeued(ticket),
                TicketStatus::Queued | TicketStatus::Processing => Placed::Queued {
                    ticket,
                    seq: t.seq,
                    line: t.line,
                },
                TicketStatus::Done(known @ (Outcome::Reserved(_) | Outcome::Confirmed(_))) => {
                    Placed::Decided(current_state(ctx, &sale.sku, ticket, known).await, ticket)
                }
                TicketStatus::Done(outcome) => Placed::Decided(outcome, ticket),
            }));
        }
    }
    // Expired: checked after the ticket book, so that a double click on a token that
    // expired while queued still joins its request; and a token spent before it expired
    // gets its first answer from the store (one read, paid with a rate credit).
    if token.expires_ms() >= unix_millis(SystemTime::now()) {
        return Ok(None);
    }
    if let Err(limited) = admission::check_rate(ctx, user, ip) {
        count(sale, limited.label());
        return Err(limited.into());
    }
    match Box::pin(replay_unless_stale(
        ctx,
        peers,
        sale,
        token,
        user,
        Unspent::Leave,
    ))
    .await?
    {
        Replay::Spent(reply) => Ok(Some(remember(
            ctx,
            sale,
            user,
            *token,
            Outcome::of_reply(&reply),
        ))),
        // Still queued under its first request (maybe on another instance): join it.
        Replay::Queued(ticket) => Ok(Some(Placed::Joined(ticket))),
        Replay::Unknown => {
            count(sale, "invalid_token");
            Err(GatewayError::InvalidToken)
        }
    }
}

/// Counts one admission decision of an order (one of `ADMISSION_OUTCOMES`).
fn count(sale: &Sale, label: &'static str) {
    sale.counters.admission(label);
}

/// Counts a full queue's refusal under the sale's overflow policy.
fn count_full(sale: &Sale) {
    count(
        sale,
        match sale.terms().settings.overflow {
            Overflow::Redirect => "redirected",
            Overflow::Reject => Refusal::QueueFull.label(),
        },
    );
}
