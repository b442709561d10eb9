//! Admission: the in-process decision, for each buying request, to let it into the sale's
//! queue or refuse it — from atomics, a keyed limiter and the queue's counters; never the
//! store.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::context::SaleContext;
use super::outcome::Outcome;
use super::queue::QueueItem;
use super::{Sale, SaleState};
use crate::error::Refusal;
use crate::ratelimit::retry_after_secs;
pub use crate::store::Unspent;
use crate::types::{TicketId, Token, UserId};

/// The checks every buying request (token or order) passes, cheapest first: the sale
/// window, pause, the sold-out flag, then the per-user and per-IP limits.
pub fn check_edge(
    ctx: &SaleContext,
    sale: &Sale,
    user: &UserId,
    ip: IpAddr,
    now: SystemTime,
) -> Result<(), Refusal> {
    check_state(sale, now)?;
    check_rate(ctx, user, ip)
}

/// The sale's window, pause, hold and sold-out flag.
fn check_state(sale: &Sale, now: SystemTime) -> Result<(), Refusal> {
    match sale.state(now) {
        // Tokens are issued for the pre-queue; orders join it before this is asked.
        SaleState::Open | SaleState::Prequeue => Ok(()),
        SaleState::Upcoming => Err(Refusal::NotStarted {
            starts_at: sale
                .terms()
                .starts_at
                .map(|t| t.to_string())
                .unwrap_or_default(),
        }),
        SaleState::Closed => Err(Refusal::Closed),
        SaleState::Paused => Err(Refusal::Paused),
        SaleState::SoldOut => Err(Refusal::SoldOut),
        SaleState::Held => Err(Refusal::Held),
    }
}

/// The per-user and per-IP rate limits alone.
pub fn check_rate(ctx: &SaleContext, user: &UserId, ip: IpAddr) -> Result<(), Refusal> {
    if let Err(wait) = ctx.per_user.check(user) {
        return Err(Refusal::RateLimited {
            retry_after: retry_after_secs(wait),
        });
    }
    if let Err(wait) = ctx.per_ip.check(&ip) {
        return Err(Refusal::RateLimited {
            retry_after: retry_after_secs(wait),
        });
    }
    Ok(())
}

/// Whether a refused order must first read its token's recorded outcome from the store,
/// and what a refusal does to a token the user still holds unspent. A token this instance
/// has no answer for (another instance took it, the reply was lost, its ticket was
/// forgotten) may have been spent already, and a final refusal must not contradict its
/// outcome (invariant 3 before invariant 6; the rate limits still apply). A sold-out
/// answer also spends an unspent token: a request for it still on its way (its reply lost,
/// a retry queued on another instance) then replays "sold out" rather than reserving after
/// the user heard "sold out".
pub fn replay_first(refusal: &Refusal) -> Option<Unspent> {
    match refusal {
        Refusal::SoldOut => Some(Unspent::SpendAsSoldOut),
        Refusal::Closed | Refusal::Paused => Some(Unspent::Leave),
        Refusal::NotStarted { .. }
        | Refusal::Held
        | Refusal::RateLimited { .. }
        | Refusal::QueueFull
        | Refusal::ShuttingDown => None,
    }
}

/// Decides an order: the edge checks, then stock-aware admission, then room for a ticket
/// (its id is drawn here, for an order that got this far) and a slot in the queue, which
/// the caller fills with the request or, by dropping it, gives back.
pub fn admit<'s>(
    ctx: &SaleContext,
    sale: &'s Sale,
    user: &UserId,
    ip: IpAddr,
    now: SystemTime,
) -> Result<Slot<'s>, Refusal> {
    precheck(ctx, sale, user, ip, now)?;
    take_place(ctx, sale, ctx.tokens.new_ticket(&ctx.owner, &sale.sku))?.number()
}

/// Every check of [`admit`] before a place is taken (the rate credit included).
pub fn precheck(
    ctx: &SaleContext,
    sale: &Sale,
    user: &UserId,
    ip: IpAddr,
    now: SystemTime,
) -> Result<(), Refusal> {
    check_state(sale, now)?;
    // Beyond remaining × admit_factor pending requests a new one could only reserve if
    // many ahead of it fail: say sold out now rather than after a wait in the queue. Told
    // before the rate limits, like the sold-out flag: a sold-out refusal costs its one
    // rate credit in the replay read that follows it, not two.
    if !sale.has_room_for_one_more() {
        return Err(Refusal::SoldOut);
    }
    check_rate(ctx, user, ip)?;
    // Told apart first: one atomic.
    if sale.queue.is_full() {
        return Err(Refusal::QueueFull);
    }
    Ok(())
}

/// Takes a place in the queue for `ticket`, after [`precheck`] and before anything that
/// costs a store call (a shared store's token hold): a full queue, or a book full of
/// unfinished tickets, refuses here, in process (invariant 6).
pub fn take_place<'s>(
    ctx: &SaleContext,
    sale: &'s Sale,
    ticket: TicketId,
) -> Result<Place<'s>, Refusal> {
    if !ctx.tickets.has_room(&ticket) || !sale.queue.take_place() {
        return Err(Refusal::QueueFull);
    }
    Ok(Place { sale, ticket })
}

/// A place within a sale's queue capacity, not numbered yet: dropped, it is given back.
pub struct Place<'s> {
    sale: &'s Sale,
    ticket: TicketId,
}

impl<'s> Place<'s> {
    /// The id of the ticket that will follow the request.
    pub fn ticket(&self) -> TicketId {
        self.ticket
    }

    /// Keeps the place taken without a number: a member of the pre-queue holds it until
    /// the drain releases it (and gives it back).
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Takes the place's sequence number, which fixes its order in the queue: the slot to
    /// fill. Refused when the ring has no slot free, or the sale's drain has stopped.
    pub fn number(self) -> Result<Slot<'s>, Refusal> {
        let place = std::mem::ManuallyDrop::new(self);
        // On `None` the queue gave the place back itself.
        let seq = place
            .sale
            .queue
            .number_for_place()
            .ok_or(Refusal::QueueFull)?;
        let slot = Slot {
            sale: place.sale,
            seq,
            ticket: place.ticket,
            held: false,
        };
        // Checked after taking the number: either the stopping drain sees the number (and
        // answers it), or this sees the stop (and the dropped slot gives the number back).
        if slot.sale.is_stopped() {
            return Err(Refusal::ShuttingDown);
        }
        Ok(slot)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.sale.queue.give_back_place();
    }
}

/// A place in a sale's queue, taken by admission. Filled, it holds the request; dropped
/// unfilled (a refusal after admission, a client gone), it is given back, so the queue
/// never waits on a number nobody will fill.
pub struct Slot<'s> {
    sale: &'s Sale,
    seq: u64,
    ticket: TicketId,
    held: bool,
}

impl Slot<'_> {
    /// Its admission sequence number: its place in the queue's order.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The id of the ticket that follows the request in it.
    pub fn ticket(&self) -> TicketId {
        self.ticket
    }

    /// Its token is held in the shared store for its ticket: the drain lets go of the hold
    /// if the outcome leaves the token unspent.
    pub fn mark_held(&mut self) {
        self.held = true;
    }

    /// Queues the request in this slot, counted as pending until its outcome, with its
    /// number in the fleet's line if it drew one; `reply` hears the outcome (wait mode).
    pub fn fill(
        self,
        user: UserId,
        token: Token,
        quantity: u32,
        line: Option<u64>,
        promised_ms: u64,
        reply: Option<oneshot::Sender<Outcome>>,
    ) {
        let this = std::mem::ManuallyDrop::new(self);
        this.sale.begin();
        this.sale.queue.push(QueueItem {
            seq: this.seq,
            ticket: this.ticket,
            user,
            token,
            quantity,
            line,
            promised_ms,
            admitted_at: Instant::now(),
            reply,
            held: this.held,
        });
    }
}

impl std::fmt::Debug for Slot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({} #{})", self.sale.sku, self.seq)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.sale.queue.cancel_reservation(self.seq);
    }
}
