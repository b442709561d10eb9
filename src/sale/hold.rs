//! Token holds: with a shared store the same token may reach several instances at once, so
//! an order's token is held in the store for its request before the request takes a place
//! in a queue (`{prefix}:{sku}:hold:<token>`, docs/contract.md). A second request with the
//! token joins the first (same ticket) or replays its outcome once spent; a hold whose
//! request is gone is taken over.

use std::sync::Arc;

use http::StatusCode;

use super::context::SaleContext;
use super::outcome::Outcome;
use super::Sale;
use crate::cluster::peers::{Asked, Peers};
use crate::error::GatewayError;
use crate::log_throttle::warn_repeated;
use crate::store::{Entry, TokenHold};
use crate::types::{Sku, TicketId, Token, UserId};

/// Where a token is held for a queued request.
pub(super) enum Held {
    /// Here, for this request: let go if the request does not get queued.
    Here(HoldGuard),
    /// For another request (maybe on another instance), queued under this ticket.
    Queued(TicketId),
    /// Spent already, with this outcome.
    Spent(Outcome),
}

/// Holds `token` in the shared store for this request's `ticket`; or the answer of the
/// request (maybe on another instance) that holds it or spent it.
pub(super) async fn hold(
    ctx: &Arc<SaleContext>,
    peers: &Peers,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    ticket: TicketId,
    entry: Entry,
) -> Result<Held, GatewayError> {
    let until = token
        .expires_ms()
        .saturating_add(ctx.tickets.ttl().as_millis() as u64);
    let store = &ctx.store;
    // From here until it is queued (or refused), this request is on its way in: a double
    // click finds its hold and joins it. The guard unmarks it, and lets go of the hold
    // unless disarmed, whatever happens.
    ctx.tickets.set_arriving(&ticket, true);
    let mut guard = HoldGuard {
        ctx: ctx.clone(),
        sku: sale.sku.clone(),
        token: *token,
        user: user.clone(),
        ticket,
        armed: true,
        line: None,
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let held = store
            .hold_token(&sale.sku, token, user, &ticket, until, entry)
            .await
            .map_err(|e| {
                warn_repeated!("cannot hold a token", sku = %sale.sku, error = %e);
                GatewayError::StoreUnavailable
            })?;
        return Ok(match held {
            TokenHold::Held { number, cursor } => {
                guard.line = Some(number);
                sale.line.seen(cursor, number);
                Held::Here(guard)
            }
            TokenHold::Prequeued => Held::Here(guard),
            // A hold whose request is gone (its instance stopped, or its release was lost):
            // let go of it and hold again, once.
            TokenHold::Queued(other) if tries == 1 && is_stale(ctx, peers, &other).await => {
                let_go(ctx, sale, token, user, &other).await?;
                continue;
            }
            // Not held for this ticket: nothing to let go.
            TokenHold::Queued(other) => {
                guard.armed = false;
                Held::Queued(other)
            }
            TokenHold::Spent(reply) => {
                guard.armed = false;
                Held::Spent(Outcome::of_reply(&reply))
            }
            // Nothing held: the user's one place in the pre-queue is that ticket's.
            TokenHold::PlaceTaken(first) => {
                guard.armed = false;
                return Err(GatewayError::PrequeuePlaceTaken {
                    ticket: first.to_string(),
                });
            }
        });
    }
}

/// Lets go of `token`'s stale hold for ticket `other`. Failing that, the request is
/// answered 503 `store_unavailable` (retry): held again, the token would still name the
/// dead request, and the buyer would join a ticket that can only end `ticket_lost`.
pub(super) async fn let_go(
    ctx: &SaleContext,
    sale: &Sale,
    token: &Token,
    user: &UserId,
    other: &TicketId,
) -> Result<(), GatewayError> {
    ctx.store
        .release_token(&sale.sku, token, user, other)
        .await
        .map_err(|e| {
            warn_repeated!("cannot let go of a stale token hold", sku = %sale.sku, error = %e);
            GatewayError::StoreUnavailable
        })
}

/// True when the request of ticket `other` that holds a token is gone, or ended leaving
/// the token unspent: its hold outlived it (its instance stopped, a release was lost, or
/// the hold's reply was lost and the request never queued).
pub(super) async fn is_stale(ctx: &SaleContext, peers: &Peers, other: &TicketId) -> bool {
    if other.owner() == ctx.owner {
        // On its way into the queue (a double click's first request): not stale. Read
        // before the book: a request is put in the book before it stops arriving, so "not
        // arriving" then "not in the book" cannot be one that moved between the two reads
        // (read the other way round, a double click under load queued twice).
        if ctx.tickets.is_arriving(other) {
            return false;
        }
        // Not in the book either: a request that never got there (its hold's reply was
        // lost); in it, stale once its outcome left the token unspent.
        return match ctx.tickets.get(other) {
            Some(t) => !t.status.binds_token(),
            None => true,
        };
    }
    match peers.ask_ticket(other).await {
        Asked::Gone => true,
        Asked::Answered { status, body, .. } => {
            status == StatusCode::NOT_FOUND || leaves_token_unspent(&body)
        }
        // It may still decide it.
        Asked::Unreachable => false,
    }
}

/// A token held for a request not queued yet: dropped armed (the request was refused, its
/// client went away first, or the hold's answer was lost), the hold is let go.
pub(super) struct HoldGuard {
    ctx: Arc<SaleContext>,
    sku: Sku,
    token: Token,
    user: UserId,
    ticket: TicketId,
    armed: bool,
    /// The number the request drew in the sale's line with its hold (`None`: it joined
    /// the pre-queue, its number comes at the opening).
    line: Option<u64>,
}

impl HoldGuard {
    /// The request's number in the fleet's line of the sale, if it drew one.
    pub(super) fn line(&self) -> Option<u64> {
        self.line
    }

    /// The request is queued: its outcome decides what becomes of the hold.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.ctx.tickets.set_arriving(&self.ticket, false);
        if !self.armed {
            return;
        }
        let (store, sku, token, ticket) = (
            self.ctx.store.clone(),
            self.sku.clone(),
            self.token,
            self.ticket,
        );
        let user = self.user.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_token(&sku, &token, &user, &ticket).await {
                    tracing::debug!(%sku, error = %e, "cannot let go of a token's hold");
                }
            });
        }
    }
}

/// True when a ticket's JSON says its request ended without spending its token.
fn leaves_token_unspent(ticket_json: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(ticket_json)
        .ok()
        .and_then(|v| {
            v["error"]
                .as_str()
                .map(|e| matches!(e, "store_unavailable" | "shutting_down"))
        })
        .unwrap_or(false)
}
