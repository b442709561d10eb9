//! The store: where stock, tokens, per-user counts and orders live, and the atomic steps
//! that change them. One trait, two implementations with the same semantics (`memory` for
//! one instance, `redis` for many), one test suite for both (`tests/store_suite/`).
//!
//! Store calls happen at the drain rate, never on the admission path, so a boxed future
//! per call costs nothing that matters and keeps `dyn Store` simple to pass around.

pub mod guarded;
pub mod lease;
pub mod line;
pub mod memory;
pub mod redis;
pub mod steps;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId};

pub use self::redis::RedisStore;
pub use guarded::GuardedStore;
pub use lease::DrainLease;
pub use line::{Line, Opening, Sealed};
pub use memory::MemoryStore;
pub use steps::{BookSteps, DrainSteps, FleetSteps, OutboxSteps, StockSteps, TokenSteps};

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
        version = crate::version::VERSION
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
    /// The token is now held by this request's ticket, which drew a number in the sale's
    /// line (see [`line`]).
    Held {
        /// The request's number in the line.
        number: u64,
        /// The line's cursor as the store held it then.
        cursor: u64,
    },
    /// The token is now held by this request's ticket, which joined the sale's pre-queue
    /// (its place is drawn at the opening: [`DrainSteps::open_prequeue`]).
    Prequeued,
    /// Another request holds it, queued under this ticket (maybe on another instance).
    Queued(TicketId),
    /// The user holds a place in the pre-queue already, under this ticket (another token):
    /// this token is left unheld and unspent.
    PlaceTaken(TicketId),
    /// It was spent already: its first outcome.
    Spent(ReserveReply),
}

/// A token to spend as sold out ([`TokenSteps::spend_sold_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The token.
    pub token: Token,
    /// Its user.
    pub user: UserId,
    /// The ticket whose hold of it may be let go.
    pub ticket: TicketId,
}

/// Where a request whose token is held enters the sale's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// At the back: it draws the next number.
    Back,
    /// Into the pre-queue, with this random key (53 bits): the keys' order is the
    /// pre-queue's order. One place a user: a user in it already is answered with the
    /// ticket that holds the place ([`TokenHold::PlaceTaken`]). Once it is sealed, at the
    /// back.
    Prequeue(u64),
}

/// What a replay found of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Spent, now or before: its outcome (as reserve answers a replay).
    Spent(ReserveReply),
    /// Unspent and held by the request queued under this ticket (maybe on another
    /// instance): that request decides it, so a double click joins it and the token is
    /// left unspent whatever `Unspent` asked.
    Queued(TicketId),
    /// Unspent and left so, or another user's.
    Unknown,
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

/// How far delivery runs behind: the orders not delivered yet, fleet-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    /// How many.
    pub orders: u64,
    /// When the oldest was reserved (ms since the Unix epoch, the store's clock).
    pub oldest_reserved_at: Option<u64>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Stock taken, waiting in the outbox for delivery.
    Reserved,
    /// The backend acknowledged it.
    Confirmed,
    /// Delivery failed for good; stock and the user's count were restored.
    Failed,
    /// The backend cancelled it after delivery (unpaid); the user's count was restored,
    /// and its units too unless the stock was loaded afresh since it was reserved.
    Cancelled,
}

impl OrderState {
    /// The state as the store writes it (`reserved`, `confirmed`, `failed`, `cancelled`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "confirmed" => Some(Self::Confirmed),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
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

/// Which orders a cancel may take back: the gateway knows an order was delivered only
/// when it delivers them itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellable {
    /// Only orders the backend acknowledged (`delivery.mode = "http"`): one still in the
    /// outbox may be in flight to the backend.
    Delivered,
    /// Reserved orders too (`delivery.mode = "stream"`: the backend consumes the outbox
    /// itself, so the gateway never learns of delivery); its outbox entry is removed.
    Reserved,
}

impl Cancellable {
    /// What a cancel may take back under `mode`: the gateway knows of delivery only when it
    /// delivers.
    pub fn under(mode: crate::config::DeliveryMode) -> Self {
        match mode {
            crate::config::DeliveryMode::Http => Self::Delivered,
            crate::config::DeliveryMode::Stream => Self::Reserved,
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// The order is cancelled: the user's count restored, its units too when `restocked`.
    Cancelled {
        /// False when this call found it cancelled already: nothing changed.
        now: bool,
        /// Its units went back to stock (false: the stock was loaded afresh after it was
        /// reserved, and that figure stands).
        restocked: bool,
        /// Stock after the cancel.
        remaining: u64,
        /// Who bought it.
        user_id: String,
        /// Its units.
        quantity: u32,
    },
    /// Still in the outbox: the backend may not have it yet, and a delivery may be in
    /// flight; nothing changed.
    NotDelivered,
    /// Compensated already (delivery failed for good): its units went back then.
    Compensated,
    /// The store holds no stock for the sale (it lost its state): nothing changed.
    NoStock,
    /// No such order (never reserved here, or forgotten `store.replay_ttl` after it
    /// settled).
    Unknown,
}

/// Where a sale's definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A `[[sale]]` of the config file.
    File,
    /// The admin API (`PUT /admin/sales/{sku}`).
    Api,
}

/// A sale's definition as the store keeps it for every instance sharing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Definition {
    /// The sale, as a `[[sale]]` of the config file would define it.
    pub sale: crate::config::SaleConfig,
    /// Who wrote it last.
    pub origin: Origin,
    /// Ended by an operator: closed for good.
    #[serde(default)]
    pub ended: bool,
}

impl Definition {
    /// True when `other` defines the same sale the same way (its origin aside).
    pub fn same_sale(&self, other: &Definition) -> bool {
        self.ended == other.ended
            && serde_json::to_value(&self.sale).ok() == serde_json::to_value(&other.sale).ok()
    }
}

/// A definition and its version: 1 when it was written first, one more at each change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versioned {
    /// The definition.
    pub definition: Definition,
    /// Its version.
    pub version: u64,
}

/// What a write of a definition expects to find in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No definition of the sale (a first write: the config file seeding the store).
    Absent,
    /// This version of it (a conditional update: `If-Match`).
    Version(u64),
    /// Whatever is there.
    Any,
}

/// What a write of a definition did.
#[derive(Debug, Clone)]
pub enum Written {
    /// Written under this version.
    Written {
        /// Its version now.
        version: u64,
    },
    /// Not written: the store holds another version than expected (`None`: none at all).
    Conflict {
        /// What the store holds.
        current: Option<Versioned>,
    },
}

/// Every sale's definition, at one revision of the book (it changes with every write).
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// The revision read.
    pub revision: u64,
    /// The definitions, in no particular order.
    pub sales: Vec<Versioned>,
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

/// The store's operations, in six groups ([`steps`]); every method is one atomic step.
/// Implemented by every type that implements the six.
pub trait Store:
    StockSteps + TokenSteps + OutboxSteps + DrainSteps + FleetSteps + BookSteps
{
}

impl<S: StockSteps + TokenSteps + OutboxSteps + DrainSteps + FleetSteps + BookSteps> Store for S {}
