//! The store's steps, in six groups; [`Store`](super::Store) is all of them. Every
//! method is one atomic step.

use std::time::Duration;

use super::{
    Book, Cancellable, Cancellation, Claimed, Compensation, Confirmation, Definition, DrainLease,
    Entry, Expected, Line, Member, Opening, Order, OrderState, OutboxDepth, Replay, ReserveReply,
    ReserveRequest, SaleControl, SaleControls, Spend, StockLoad, StockReading, StoreFuture,
    TicketRecord, TokenHold, Unspent, Written,
};
use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId};

/// A sale's stock: loaded once, read, changed by operators.
pub trait StockSteps: Send + Sync + 'static {
    /// Loads a sale's stock at start-up: the store's figure if it holds the sale, else the
    /// configured `stock` — unless this instance `remembers` having loaded it before, in
    /// which case the store lost its state and nothing is written ([`StockLoad::Lost`]).
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad>;

    /// Leaves a tombstone where the sale's stock was (the store lost it, and this instance
    /// had loaded it as `epoch`), so that a first start does not load it again; a no-op
    /// once stock is back. The memory store has no other instance to warn.
    fn mark_lost(&self, sku: &Sku, epoch: &Epoch) -> StoreFuture<'_, ()>;

    /// Sets a sale's stock, replacing what is there, under a new epoch (operator action).
    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch>;

    /// Adds `delta` units (negative: takes them away) atomically, racing with no
    /// reservation; returns the stock now. [`StoreError::OutOfRange`] leaves it unchanged.
    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64>;

    /// Stock left for a sale, with its epoch.
    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading>;
}

/// Spending tokens (the one atomic order step), their replays and holds.
pub trait TokenSteps: Send + Sync + 'static {
    /// Spends a token: a token spent before replays its first outcome (another user's is
    /// invalid, as is one past its expiry); else checks the user's limit, decrements stock
    /// only if enough remains, records the order in the outbox and the token spent (until
    /// the later of its expiry and the replay TTL) — all or nothing. The token's signature
    /// was checked at the edge ([`crate::token`]): the store never sees a forged one.
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply>;

    /// A spent token's recorded outcome; a token `user` holds unspent is left so or spent
    /// as sold out, as `unspent` says, unless a queued request holds it
    /// ([`hold_token`](Self::hold_token)): then that request's ticket, the token left
    /// unspent. [`Replay::Unknown`] if the token is not this user's (or unknown).
    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Replay>;

    /// Holds `token` (this `user`'s, unspent) for the queued request `ticket` until
    /// `until_ms` (Unix ms), so that the same token sent to another instance joins this
    /// request instead of queueing twice; a token held or spent before says so instead.
    /// The ticket is remembered with it, for [`ticket_record`](Self::ticket_record). In
    /// the same step the request enters the sale's line where `entry` says (see
    /// [`line`](crate::store::line)).
    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
        entry: Entry,
    ) -> StoreFuture<'_, TokenHold>;

    /// Lets go of `token` (`user`'s) if `ticket` holds it (its request was refused after
    /// all, or ended leaving it unspent): the token may be held again, and before the
    /// pre-queue is sealed the user's place in it is given up. What became of `ticket` stays
    /// readable ([`ticket_record`](Self::ticket_record)) until its hold would have run out.
    fn release_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
    ) -> StoreFuture<'_, ()>;

    /// Spends each token of `spends` with "sold out" as its outcome, as a refusal at the
    /// edge does ([`Unspent::SpendAsSoldOut`]), unless it is spent already or held by
    /// another ticket than the spend's; a hold of the spend's own ticket is let go. For the
    /// pre-queue's members told sold out at the opening: their answer stands for their
    /// tokens, on every instance.
    fn spend_sold_out(&self, sku: &Sku, spends: &[Spend]) -> StoreFuture<'_, ()>;

    /// What became of the request behind `ticket`, if a token was held for it in `sku`.
    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>>;

    /// An order's state, if the store knows the order.
    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>>;
}

/// The outbox of reserved orders: claimed by deliverers, confirmed or compensated.
pub trait OutboxSteps: Send + Sync + 'static {
    /// Up to `max` reserved, undelivered orders of `sku`, oldest first.
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>>;

    /// How many reserved orders of `sku` are not delivered yet, and when the oldest of
    /// them was reserved (ms since the Unix epoch, on the store's clock).
    fn outbox_depth(&self, sku: &Sku) -> StoreFuture<'_, OutboxDepth>;

    /// Up to `max` orders for deliverer `consumer` to deliver: those it already holds,
    /// new ones, and those another deliverer has held for longer than `claim_idle` (it
    /// probably died). With one deliverer this is [`outbox`](Self::outbox).
    fn claim(
        &self,
        sku: &Sku,
        consumer: &str,
        max: usize,
        claim_idle: Duration,
    ) -> StoreFuture<'_, Claimed>;

    /// Moves to deliverer `consumer` the orders of `sku` held by deliverers not in `live`
    /// (their instances have left or stopped announcing themselves) and idle for at least
    /// `min_idle`; returns their ids. What the gone deliverer did with them is unknown.
    /// A store with one deliverer has nothing to take over.
    fn take_over(
        &self,
        sku: &Sku,
        consumer: &str,
        live: &[String],
        min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>>;

    /// Renews deliverer `consumer`'s hold on `orders` just before it POSTs them, so no
    /// other deliverer takes them over while the POST is in flight; returns those it
    /// still owns (the others were taken over and are not its to deliver).
    fn touch(&self, sku: &Sku, consumer: &str, orders: &[OrderId])
        -> StoreFuture<'_, Vec<OrderId>>;

    /// Marks an order delivered and takes it out of the outbox. With a `consumer`, only
    /// if that deliverer owns the order (fencing); `""` settles whoever holds it.
    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Confirmation>;

    /// Undoes a reserved order: restores stock and the user's count, marks it failed,
    /// takes it out of the outbox. Running it twice changes nothing the second time.
    /// Fenced by `consumer` as [`confirm`](Self::confirm) is.
    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        consumer: &str,
    ) -> StoreFuture<'_, Compensation>;

    /// Cancels an order the backend gave up (unpaid), once however often it is asked:
    /// the user's count restored, and its units put back unless the stock was loaded
    /// afresh (a new epoch) since it was reserved — the operator's figure already says
    /// what is for sale, and a unit is never created twice. Only a confirmed order, or a
    /// reserved one as `cancellable` allows; a compensated one, or a sale whose stock the
    /// store lost, changes nothing.
    fn cancel(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        cancellable: Cancellable,
    ) -> StoreFuture<'_, Cancellation>;
}

/// The drain shared by every instance: its rate budget, pending counts, operator settings.
pub trait DrainSteps: Send + Sync + 'static {
    /// Records that the instance `me` has `pending` requests of `sku` admitted and not yet
    /// decided, for `ttl` (0 forgets them), and returns how many the other instances have
    /// (those whose record has not run out): stock-aware admission counts them all.
    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64>;

    /// Leases up to `want` permits from `sku`'s drain rate, which every instance sharing
    /// the store draws on (see [`lease`]): the rate an operator set with
    /// [`set_drain_rate`](Self::set_drain_rate), else `rate` (the configured one).
    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease>;

    /// Moves `sku`'s line cursor at its drain rate (the rate an operator set, else `rate`)
    /// and reports it (see [`line`](crate::store::line)).
    fn advance_line(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, Line>;

    /// Opens `sku`'s pre-queue: seals it if no one has (see [`line`](crate::store::line)),
    /// records that its first `keep` members are kept if no one has, and tells the places
    /// of `users` in it (one place a user).
    fn open_prequeue(&self, sku: &Sku, users: &[UserId], keep: u64) -> StoreFuture<'_, Opening>;

    /// Sets `sku`'s drain rate for every instance; it replaces the configured rate until
    /// set again.
    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()>;

    /// Sets `sku`'s drain rate to `to` if the rate stored is still `from` (or none is):
    /// an "auto" rate's steering, which must not overwrite a rate set meanwhile. True if
    /// it was set.
    fn steer_drain_rate(&self, sku: &Sku, from: u32, to: u32) -> StoreFuture<'_, bool>;

    /// Stores an operator's setting of `sku` for every instance; it replaces the
    /// configured one until set again.
    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()>;

    /// The settings operators stored for `sku` (what was never set is `None`).
    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls>;
}

/// The store itself and the instances sharing it: readiness, key layout, membership.
pub trait FleetSteps: Send + Sync + 'static {
    /// Succeeds when the store answers (readiness).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Records key layout `layout` in a store that names none yet, and refuses
    /// ([`StoreError::Layout`]) a store that names another.
    fn claim_layout(&self, layout: u32) -> StoreFuture<'_, ()>;

    /// Announces (or renews) `member` for `ttl` and returns the live members, by id. A
    /// member whose announcement is not renewed within its `ttl` is forgotten. An id a
    /// live member of another incarnation holds is refused ([`StoreError::Rejected`]).
    fn announce(&self, member: &Member, ttl: Duration) -> StoreFuture<'_, Vec<Member>>;

    /// The live members, by id.
    fn members(&self) -> StoreFuture<'_, Vec<Member>>;

    /// Forgets `member` at once (a graceful stop), if the entry is its incarnation's.
    fn leave(&self, member: &Member) -> StoreFuture<'_, ()>;
}

/// The book of sale definitions every instance sharing the store runs by.
pub trait BookSteps: Send + Sync + 'static {
    /// The whole book, unless its revision is still `known` (`None`: nothing changed since;
    /// one read of a counter, so instances may ask often).
    fn sale_book(&self, known: u64) -> StoreFuture<'_, Option<Book>>;

    /// Writes `definition` (under its sku) if the store holds what `expected` says, one
    /// version on from what was there.
    fn write_sale(&self, definition: &Definition, expected: Expected) -> StoreFuture<'_, Written>;
}
