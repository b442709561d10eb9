//! Finding a ticket's answer: in this instance's ticket book, else (with a shared store)
//! from the instance that issued it, else from the store's record of what became of it.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue, StatusCode};

use super::context::SaleContext;
use super::outcome::Outcome;
use super::ticket::{Ticket, TicketStatus};
use crate::cluster::peers::{Asked, Peers};
use crate::error::GatewayError;
use crate::log_throttle::warn_repeated;
use crate::ratelimit::retry_after_secs;
use crate::store::{Replay, StoreError, TicketRecord, Unspent};
use crate::types::{Sku, TicketId};

/// Where a ticket's answer was found.
pub enum Found {
    /// In this instance's book.
    Here(Ticket),
    /// Its owner's answer, to pass on as it is.
    Relayed {
        /// The owner's status.
        status: StatusCode,
        /// The owner's headers worth passing on.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// The owner's body.
        body: bytes::Bytes,
    },
    /// The store's record: decided, in sale `Sku`, with this outcome.
    Decided(Sku, Outcome),
}

/// Finds ticket `id`; `peers` when the store is shared with other instances. Unknown,
/// lost (its owner gone before deciding it) and unavailable (its owner silent) tickets are
/// the contract's errors.
pub async fn find_ticket(
    ctx: &SaleContext,
    peers: Option<&Peers>,
    id: TicketId,
    client: IpAddr,
) -> Result<Found, GatewayError> {
    if let Some(ticket) = known_ticket(ctx, id).await {
        return Ok(Found::Here(ticket));
    }
    // Another instance's ticket: its owner answers, else the store says what became of it.
    let Some(peers) = peers else {
        return Err(GatewayError::UnknownTicket);
    };
    // This process's own, or one no instance issued (its MAC says so): nobody else knows
    // it, and the store is not asked.
    if id.owner() == ctx.owner || !ctx.tokens.issued(&id) {
        return Err(GatewayError::UnknownTicket);
    }
    // Answered by another instance or the store: paid for per ticket and per client, so
    // that a client polling in a loop is refused itself, before it costs anyone a relay.
    if let Err(wait) = ctx
        .ticket_polls
        .check(&id)
        .and_then(|()| ctx.relays_per_ip.check(&client))
    {
        relayed(ctx, "rate_limited");
        return Err(GatewayError::RateLimited {
            retry_after: retry_after_secs(wait),
        });
    }
    let owner_gone = match peers.ask_ticket(&id).await {
        Asked::Answered {
            status,
            headers,
            body,
        } => {
            relayed(ctx, "answered");
            return Ok(Found::Relayed {
                status,
                headers,
                body,
            });
        }
        Asked::Gone => true,
        Asked::Unreachable => false,
    };
    relayed(
        ctx,
        if owner_gone {
            "owner_gone"
        } else {
            "owner_silent"
        },
    );
    match ticket_record(ctx, &id).await? {
        Some((sku, TicketRecord::Decided(reply))) => {
            Ok(Found::Decided(sku, Outcome::of_reply(&reply)))
        }
        // Nothing was reserved for it; its owner can no longer decide it.
        Some((_, TicketRecord::Queued)) if owner_gone => Err(GatewayError::TicketLost),
        Some((_, TicketRecord::Queued)) => Err(GatewayError::TicketUnavailable),
        None if owner_gone => Err(GatewayError::UnknownTicket),
        None => Err(GatewayError::TicketUnavailable),
    }
}

/// Counts a poll of another instance's ticket (one of `RELAY_RESULTS`).
fn relayed(ctx: &SaleContext, result: &str) {
    ctx.metrics.ticket_relays.with_label_values(&[result]).inc();
}

/// Ticket `id` from this instance's books, a reserved order's state brought up to date
/// first (see [`current_state`]) at most at the ticket's poll rate
/// (`limits.ticket_poll_rate`): a poll in a loop reads the store no faster.
pub async fn known_ticket(ctx: &SaleContext, id: TicketId) -> Option<Ticket> {
    let mut ticket = ctx.known_ticket(&id)?;
    // A confirmed order may still be cancelled (by a call to another instance).
    let unsettled = matches!(
        ticket.status,
        TicketStatus::Done(
            Outcome::Reserved(_) | Outcome::Confirmed(_) | Outcome::StoreUnavailable
        )
    );
    if !(unsettled && ctx.shared && ctx.ticket_polls.check(&id).is_ok()) {
        return Some(ticket);
    }
    let now = match ticket.status {
        TicketStatus::Done(known @ (Outcome::Reserved(_) | Outcome::Confirmed(_))) => {
            current_state(ctx, &ticket.sku, id, known).await
        }
        _ => stepped_after_all(ctx, &ticket, id).await,
    };
    ticket.status = TicketStatus::Done(now);
    Some(ticket)
}

/// A ticket whose store step went unanswered (`store_unavailable`): the store may have run
/// it after all, once it answered again. Its token's recorded outcome says (one read); a
/// token still unspent leaves the answer as it was (resubmitting it is safe).
async fn stepped_after_all(ctx: &SaleContext, ticket: &Ticket, id: TicketId) -> Outcome {
    let Some(sale) = ctx.sales.get(ticket.sku.as_str()) else {
        return Outcome::StoreUnavailable;
    };
    match ctx
        .replay(&sale, &ticket.token, &ticket.user, Unspent::Leave)
        .await
    {
        Ok(Replay::Spent(reply)) => {
            let decided = Outcome::of_reply(&reply);
            ctx.update_ticket(&id, TicketStatus::Done(decided));
            decided
        }
        _ => Outcome::StoreUnavailable,
    }
}

/// An order's outcome now (it was `known`: reserved, or confirmed and not cancelled yet),
/// recorded on its ticket `id`. With a shared store another instance may have delivered it
/// (confirmed, or failed and compensated) or taken a cancel for it, so the store is asked
/// (one read); with the memory store this instance keeps its tickets current. If the store
/// does not answer, or has forgotten the order, what this instance knows.
pub(super) async fn current_state(
    ctx: &SaleContext,
    sku: &Sku,
    id: TicketId,
    known: Outcome,
) -> Outcome {
    let Some(order) = known.order() else {
        return known;
    };
    if !ctx.shared {
        return known;
    }
    match ctx.store.order_state(sku, &order).await {
        Ok(Some(state)) => {
            let now = Outcome::of_order(order, Some(state));
            if now != known {
                ctx.update_ticket(&id, TicketStatus::Done(now));
            }
            now
        }
        Ok(None) | Err(_) => known,
    }
}

/// The store's record of `ticket`, looked for in the sales its tag names (one, unless two
/// sales' tags collide; only polls its owner could not answer come here).
async fn ticket_record(
    ctx: &SaleContext,
    ticket: &TicketId,
) -> Result<Option<(Sku, TicketRecord)>, GatewayError> {
    for sale in ctx
        .sales
        .all()
        .into_iter()
        .filter(|s| s.sku.tag() == ticket.sale_tag())
    {
        match ctx.store.ticket_record(&sale.sku, ticket).await {
            Ok(Some(record)) => return Ok(Some((sale.sku.clone(), record))),
            Ok(None) | Err(StoreError::UnknownSale(_)) => {}
            Err(e) => {
                warn_repeated!("cannot read a ticket's record", sku = %sale.sku, error = %e);
                return Err(GatewayError::StoreUnavailable);
            }
        }
    }
    Ok(None)
}
