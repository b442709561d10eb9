//! The store: where stock, tokens, per-user counts and orders live, and the atomic steps
//! that change them. One trait, two implementations with the same semantics (`memory` for
//! one instance, `redis` for many), one test suite for both (`tests/store_suite/`).
//!
//! Store calls happen at the drain rate, never on the admission path, so a boxed future
//! per call costs nothing that matters and keeps `dyn Store` simple to pass around.

pub mod breaker;
pub mod lease;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId};

pub use self::redis::RedisStore;
pub use breaker::Breaker;
pub use lease::DrainLease;
pub use memory::MemoryStore;

/// What a store call returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Why a store call failed; the operation may or may not have happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds no such sale (its stock was never loaded).
    #[error("the store has no sale `{0}`")]
    UnknownSale(Sku),
    /// The store reported a state that breaks an invariant (negative stock): the oversell
    /// guard. Nothing is reserved on such an answer.
    #[error("oversell guard: {0}")]
    Invariant(String),
    /// The store answered, refusing the step (a script failed on data it holds, such as a
    /// stock figure set by hand that is not a whole number): that sale's trouble, not the
    /// store being down, so it never opens the breaker every sale shares.
    #[error("the store refused the step: {0}")]
    Rejected(String),
    /// A stock change would take the stock below 0 or above [`crate::types::MAX_STOCK`];
    /// nothing changed.
    #[error("stock would leave 0..=2^53-1 (it holds {units})")]
    OutOfRange {
        /// Stock held now.
        units: u64,
    },
    /// The store was written by a flashgate whose keys are laid out differently: this one
    /// would misread them. Nothing was written.
    #[error(
        "the store holds key layout {found}, this flashgate {version} uses layout {expected}: \
         run the version that wrote it, or empty or migrate the store (docs/operating.md: upgrade and rollback)",
        version = crate::build::VERSION
    )]
    Layout {
        /// The layout the store names.
        found: String,
        /// The layout this build reads and writes ([`KEY_LAYOUT`]).
        expected: u32,
    },
}

/// The version of the store's key layout this build reads and writes, recorded in the store
/// (`<key_prefix>:layout`); it changes whenever keys or their contents change meaning.
pub const KEY_LAYOUT: u32 = 1;

/// One reserve step's input: spend `token` on `quantity` units of `sku` for `user`.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The sale.
    pub sku: Sku,
    /// Who buys.
    pub user: UserId,
    /// The one-time token they were issued.
    pub token: Token,
    /// Units wanted.
    pub quantity: u32,
    /// Most units this user may hold in this sale.
    pub per_user_limit: u32,
}

/// The outcome of a reserve step; a token's first outcome is remembered and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reservation {
    /// Stock was decremented and the order recorded in the outbox.
    Reserved {
        /// The new order.
        order_id: OrderId,
        /// Stock left after this reservation.
        remaining: u64,
    },
    /// Not enough stock left.
    SoldOut {
        /// Stock left (less than was asked for).
        remaining: u64,
    },
    /// The user already holds `per_user_limit` units.
    LimitReached,
    /// The token is unknown, expired, another user's or another sale's.
    InvalidToken,
}

/// A reserve step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveReply {
    /// What happened (or, on a replay, what happened the first time).
    pub outcome: Reservation,
    /// True when the token had been spent before and this is its first outcome again.
    pub replayed: bool,
    /// For a reserved order, its state now: a replay answers where the order is (confirmed,
    /// or failed and its stock restored), the same on every instance. `None` otherwise, or
    /// when the settled order has expired from the store.
    pub state: Option<OrderState>,
}

/// What [`Store::replay`] does with a token its user holds but has not spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unspent {
    /// Nothing: a read.
    Leave,
    /// Spend it with "sold out" as its outcome, so that the answer the edge gives now is
    /// the token's one answer (a request for it still on its way replays it).
    SpendAsSoldOut,
}

/// What holding a token for a queued request found (a shared store: a token may reach
/// any instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHold {
    /// The token is now held by this request's ticket.
    Held,
    /// Another request holds it, queued under this ticket (maybe on another instance).
    Queued(TicketId),
    /// It was spent already: its first outcome.
    Spent(ReserveReply),
}

/// What the store knows of a ticket that held a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketRecord {
    /// Its token was not spent (yet): the request is queued, or was lost with its instance.
    Queued,
    /// Its token was spent: the first outcome.
    Decided(ReserveReply),
}

/// What loading a sale's stock at start-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockLoad {
    /// The store holds the sale already; its figure wins.
    Held {
        /// Units held.
        units: u64,
        /// Its epoch.
        epoch: Epoch,
    },
    /// First load: the configured stock was written.
    Created {
        /// Units written.
        units: u64,
        /// The new epoch.
        epoch: Epoch,
    },
    /// The store has no stock although this instance loaded it before: it lost its state.
    /// Nothing was written; the sale must be held until an operator loads stock.
    Lost,
}

/// A sale's stock as the store holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockReading {
    /// Units left.
    pub units: u64,
    /// Which loading of the stock this is (`None` for a store written by hand).
    pub epoch: Option<Epoch>,
}

/// Orders for one deliverer, with the store's clock.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The orders, oldest first.
    pub orders: Vec<Order>,
    /// The store's time, milliseconds since the Unix epoch: delivery deadlines are judged
    /// by the clock that stamped `reserved_at`, not by each instance's own.
    pub now_ms: u64,
    /// Orders among them taken over from another deliverer (it probably died): what it
    /// did with them is unknown.
    pub taken_over: Vec<OrderId>,
    /// True when these are all the orders the deliverer holds: what it remembers of orders
    /// not among them may be forgotten (they were settled elsewhere).
    pub complete: bool,
}

/// What a confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The order is now confirmed and out of the outbox.
    Confirmed,
    /// It was confirmed before.
    AlreadyConfirmed,
    /// It had been compensated: its stock went back although the backend accepted it. A
    /// conflict to count and alert on, never to hide.
    Compensated,
    /// Another deliverer owns the order now; it settles it.
    NotOwner,
    /// No such order.
    Unknown,
}

/// A reserved order, as the backend receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique id, also the delivery's idempotency key.
    pub order_id: OrderId,
    /// The sale.
    pub sku: String,
    /// The buyer.
    pub user_id: String,
    /// Units.
    pub quantity: u32,
    /// When it was reserved, milliseconds since the Unix epoch.
    pub reserved_at: u64,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Stock taken, waiting in the outbox for delivery.
    Reserved,
    /// The backend acknowledged it.
    Confirmed,
    /// Delivery failed for good; stock and the user's count were restored.
    Failed,
}

impl OrderState {
    /// The state as the store writes it (`reserved`, `confirmed`, `failed`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "confirmed" => Some(Self::Confirmed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One gateway instance sharing the store, as it announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Its instance id (`cluster.instance_id`).
    pub id: String,
    /// Where the other instances reach it (`cluster.advertise`).
    pub address: String,
    /// Drawn at each start: tells two processes announcing the same id apart, so that
    /// neither takes over nor removes the other's entry.
    #[serde(skip)]
    pub incarnation: String,
}

impl Member {
    /// Its deliverer's name in the store: one per process, and naming its instance.
    pub fn consumer(&self) -> String {
        format!("{}/{}", self.id, self.incarnation)
    }
}

/// What a compensation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compensation {
    /// Stock and the user's count were restored; the order is now failed.
    Restored {
        /// Stock after restoring.
        remaining: u64,
    },
    /// The order had been compensated already; nothing changed.
    AlreadyFailed,
    /// The order was confirmed by the backend and is not undone.
    Confirmed,
    /// Another deliverer owns the order now; it settles it.
    NotOwner,
    /// No such order.
    Unknown,
}

/// One operator setting of a sale, stored with it so that every instance sharing the
/// store applies it (and a restarted one starts with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleControl {
    /// Admission and the drain stopped (true) or running.
    Paused(bool),
    /// The drain running (true) or held while admission goes on.
    Draining(bool),
    /// The queue's capacity on each instance.
    Capacity(usize),
}

/// The settings operators stored for a sale; `None`: never set, the config's holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleControls {
    /// See [`SaleControl::Paused`].
    pub paused: Option<bool>,
    /// See [`SaleControl::Draining`].
    pub draining: Option<bool>,
    /// See [`SaleControl::Capacity`].
    pub capacity: Option<usize>,
    /// The drain rate set for every instance ([`Store::set_drain_rate`]).
    pub drain_rate: Option<u32>,
}

impl SaleControls {
    /// Applies one setting.
    pub fn apply(&mut self, control: SaleControl) {
        match control {
            SaleControl::Paused(p) => self.paused = Some(p),
            SaleControl::Draining(d) => self.draining = Some(d),
            SaleControl::Capacity(c) => self.capacity = Some(c),
        }
    }
}

/// The store's operations. Every method is one atomic step.
pub trait Store: Send + Sync + 'static {
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

    /// Spends a token: a token spent before replays its first outcome (another user's is
    /// invalid, as is one past its expiry); else checks the user's limit, decrements stock
    /// only if enough remains, records the order in the outbox and the token spent (until
    /// the later of its expiry and the replay TTL) — all or nothing. The token's signature
    /// was checked at the edge ([`crate::token`]): the store never sees a forged one.
    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply>;

    /// A spent token's recorded outcome; a token `user` holds unspent is left so or spent
    /// as sold out, as `unspent` says. `None` if the token is not this user's (or unknown).
    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Option<ReserveReply>>;

    /// Holds `token` (this `user`'s, unspent) for the queued request `ticket` until
    /// `until_ms` (Unix ms), so that the same token sent to another instance joins this
    /// request instead of queueing twice; a token held or spent before says so instead.
    /// The ticket is remembered with it, for [`ticket_record`](Self::ticket_record).
    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
    ) -> StoreFuture<'_, TokenHold>;

    /// Lets go of `token` if `ticket` holds it (its request was refused after all).
    fn release_token(&self, sku: &Sku, token: &Token, ticket: &TicketId) -> StoreFuture<'_, ()>;

    /// What became of the request behind `ticket`, if a token was held for it in `sku`.
    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>>;

    /// Up to `max` reserved, undelivered orders of `sku`, oldest first.
    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>>;

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

    /// An order's state, if the store knows the order.
    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>>;

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

    /// Sets `sku`'s drain rate for every instance; it replaces the configured rate until
    /// set again.
    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()>;

    /// Stores an operator's setting of `sku` for every instance; it replaces the
    /// configured one until set again.
    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()>;

    /// The settings operators stored for `sku` (what was never set is `None`).
    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls>;

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
