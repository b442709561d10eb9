//! The in-process store: one mutex per sale, so that each step is atomic without any lock
//! shared between sales. For one instance and for `flashgate demo`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

mod book;
mod drain;
mod fleet;
mod outbox;
mod snapshot;
mod stock;
mod tokens;

use super::{
    Member, Order, OrderState, Reservation, ReserveReply, ReserveRequest, SaleControls, StoreError,
    StoreFuture,
};
use crate::types::unix_millis;
use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId};

/// How long a spent token's outcome is kept for replays.
const DEFAULT_REPLAY_TTL: Duration = Duration::from_secs(3600);

/// Stock, tokens and orders held in this process.
pub struct MemoryStore {
    sales: RwLock<HashMap<Sku, Arc<Mutex<SaleData>>>>,
    replay_ttl: Duration,
    /// Announced members and when each announcement expires (only this process's own,
    /// but the same contract as a shared store's).
    members: Mutex<BTreeMap<String, (Member, Instant)>>,
    /// Each sale's drain budget: its arrival time (µs since `epoch`) and the rate an
    /// operator set, apart from the stock so that a drain runs before stock is loaded.
    drains: Mutex<HashMap<Sku, DrainBudget>>,
    /// Where the drain budgets' clock starts.
    epoch: Instant,
    /// Each sale's pending requests by instance, and until when each count holds.
    pending: Mutex<HashMap<Sku, PendingCounts>>,
    /// Operators' settings by sale (one process: they live as long as it does).
    controls: Mutex<HashMap<Sku, SaleControls>>,
    /// The key this process signs tokens with when `cluster.secret` is empty: part of the
    /// state a graceful restart keeps, so that tokens issued before it still hold.
    token_secret: RwLock<String>,
    /// The sales' definitions (kept across a graceful restart too).
    book: Mutex<book::SaleBook>,
}

/// One sale's pending requests by instance, and until when each count holds.
type PendingCounts = HashMap<String, (u64, Instant)>;

#[derive(Default)]
struct DrainBudget {
    tat_us: Option<f64>,
    rate: Option<u32>,
    /// The sale's line (numbers drawn by token holds, and the cursor).
    line: crate::store::line::LineState,
    /// The pre-queue's members (one place a user: the ticket holding it) and their random
    /// keys, until it is sealed.
    prequeue: HashMap<UserId, (u64, TicketId)>,
    /// Once sealed: each member's 1-based place, in the order of their keys.
    places: HashMap<UserId, u64>,
}

/// A spent token: who spent it and its first outcome, replayed to every later request.
struct SpentToken {
    user: UserId,
    outcome: Reservation,
}

/// An order the store keeps, with what a cancel needs to know of it.
struct KeptOrder {
    order: Order,
    state: OrderState,
    /// The loading of the stock it was reserved under ([`SaleData::loading`]).
    loading: u32,
    /// Cancelled with its units put back.
    restocked: bool,
    /// Until when the token that made it is kept: once settled, the order is kept as long
    /// (a replay of the token always finds what became of it).
    token_until: Instant,
}

impl KeptOrder {
    fn reserved(order: Order, loading: u32, token_until: Instant) -> Self {
        Self {
            order,
            state: OrderState::Reserved,
            loading,
            restocked: false,
            token_until,
        }
    }
}

struct SaleData {
    stock: u64,
    epoch: Epoch,
    /// Counts the operator's stock loadings in this process, so that a cancel can tell an
    /// order reserved before the last one (whose units the new figure already settled).
    loading: u32,
    buyers: HashMap<UserId, u32>,
    /// Spent tokens, each kept until the later of its expiry and the replay TTL.
    tokens: HashMap<Token, (SpentToken, Instant)>,
    /// The same tokens by deadline, earliest first.
    token_expiry: BTreeSet<(Instant, Token)>,
    /// Tokens held by queued requests (see [`Store::hold_token`]), and their tickets.
    holds: HashMap<Token, (TicketId, Instant)>,
    held_by: HashMap<TicketId, Token>,
    /// Tickets whose hold was let go, by the deadline their record is kept until (the
    /// hold's), earliest first.
    released: BTreeSet<(Instant, TicketId)>,
    /// The holds by deadline, earliest first.
    hold_expiry: BTreeSet<(Instant, Token)>,
    orders: HashMap<OrderId, KeptOrder>,
    outbox: VecDeque<OrderId>,
    /// Settled orders by the time they are forgotten (after the replay TTL), oldest first.
    settled: VecDeque<(Instant, OrderId)>,
    /// Orders restored from a snapshot: what their earlier deliveries did is unknown (one
    /// may have been in flight at the stop), so the deliverer treats them as taken over.
    restored: std::collections::HashSet<OrderId>,
}

impl SaleData {
    fn new(stock: u64, epoch: Epoch) -> Self {
        Self {
            stock,
            epoch,
            loading: 0,
            buyers: HashMap::new(),
            tokens: HashMap::new(),
            token_expiry: BTreeSet::new(),
            holds: HashMap::new(),
            held_by: HashMap::new(),
            released: BTreeSet::new(),
            hold_expiry: BTreeSet::new(),
            orders: HashMap::new(),
            outbox: VecDeque::new(),
            settled: VecDeque::new(),
            restored: std::collections::HashSet::new(),
        }
    }

    /// The current state of a token's recorded outcome: a reserved order may have been
    /// confirmed or compensated since.
    fn replay_of(&self, outcome: &Reservation) -> ReserveReply {
        let state = match outcome {
            Reservation::Reserved { order_id, .. } => self.orders.get(order_id).map(|o| o.state),
            _ => None,
        };
        ReserveReply {
            outcome: outcome.clone(),
            replayed: true,
            state,
        }
    }

    /// Gives `quantity` units of `user`'s back to its per-user allowance.
    fn give_back(&mut self, user: &str, quantity: u32) {
        let Some(user) = UserId::parse(user) else {
            return;
        };
        if let Some(held) = self.buyers.get_mut(&user) {
            *held = held.saturating_sub(quantity);
            if *held == 0 {
                self.buyers.remove(&user);
            }
        }
    }

    /// An order left the outbox: it is kept for replays until `forget_at`, and as long as
    /// its token.
    fn settle(&mut self, order_id: &OrderId, forget_at: Instant) {
        let forget_at = self
            .orders
            .get(order_id)
            .map_or(forget_at, |o| forget_at.max(o.token_until));
        self.outbox.retain(|id| id != order_id);
        self.restored.remove(order_id);
        self.settled.push_back((forget_at, *order_id));
    }

    fn sweep(&mut self, now: Instant) {
        while self.settled.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.settled.pop_front() {
                self.orders.remove(&id);
            }
        }
        while let Some(&(deadline, token)) = self.token_expiry.first() {
            if deadline > now {
                break;
            }
            self.token_expiry.pop_first();
            self.tokens.remove(&token);
        }
        while let Some(&(deadline, token)) = self.hold_expiry.first() {
            if deadline > now {
                break;
            }
            self.hold_expiry.pop_first();
            self.unhold(&token);
        }
        while let Some(&(deadline, ticket)) = self.released.first() {
            if deadline > now {
                break;
            }
            self.released.pop_first();
            self.held_by.remove(&ticket);
        }
    }

    /// Lets go of `token`'s hold, keeping its ticket's record until the hold's deadline.
    fn release(&mut self, token: &Token) {
        if let Some((ticket, deadline)) = self.holds.remove(token) {
            self.hold_expiry.remove(&(deadline, *token));
            self.released.insert((deadline, ticket));
        }
    }

    fn unhold(&mut self, token: &Token) {
        if let Some((ticket, deadline)) = self.holds.remove(token) {
            self.held_by.remove(&ticket);
            self.hold_expiry.remove(&(deadline, *token));
        }
    }

    /// Records `token` spent until `deadline` (a token is spent once, so never twice).
    fn remember(&mut self, token: Token, record: SpentToken, deadline: Instant) {
        self.token_expiry.insert((deadline, token));
        self.tokens.insert(token, (record, deadline));
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store; sales appear when their stock is loaded.
    pub fn new() -> Self {
        Self::with_replay_ttl(DEFAULT_REPLAY_TTL)
    }

    /// An empty store keeping spent tokens' outcomes for `replay_ttl`.
    pub fn with_replay_ttl(replay_ttl: Duration) -> Self {
        Self {
            sales: RwLock::new(HashMap::new()),
            replay_ttl,
            members: Mutex::new(BTreeMap::new()),
            drains: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            pending: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            token_secret: RwLock::new(OrderId::random().to_string() + OrderId::random().as_str()),
            book: Mutex::default(),
        }
    }

    /// The live members after forgetting expired ones.
    fn live_members(members: &mut BTreeMap<String, (Member, Instant)>) -> Vec<Member> {
        let now = Instant::now();
        members.retain(|_, (_, expires)| *expires > now);
        members.values().map(|(m, _)| m.clone()).collect()
    }

    fn sale(&self, sku: &Sku) -> Result<Arc<Mutex<SaleData>>, StoreError> {
        self.sales
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .cloned()
            .ok_or_else(|| StoreError::UnknownSale(sku.clone()))
    }

    /// The sale's data, created with `stock` under `epoch` if the store has no such sale;
    /// `true` when it was created.
    fn sale_or_create(&self, sku: &Sku, stock: u64, epoch: Epoch) -> (Arc<Mutex<SaleData>>, bool) {
        if let Ok(s) = self.sale(sku) {
            return (s, false);
        }
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        let mut created = false;
        let sale = sales
            .entry(sku.clone())
            .or_insert_with(|| {
                created = true;
                Arc::new(Mutex::new(SaleData::new(stock, epoch)))
            })
            .clone();
        (sale, created)
    }

    /// The key tokens are signed with when no `cluster.secret` is set (random, kept across
    /// a graceful restart with the rest of this store).
    pub fn token_secret(&self) -> String {
        self.token_secret
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Spent tokens held for a sale: for tests of bounded memory.
    pub fn token_count(&self, sku: &Sku) -> usize {
        self.sale(sku).map(|s| lock(&s).tokens.len()).unwrap_or(0)
    }

    /// How long a token spent now is remembered: for replays, and at least until it
    /// expires (so that it can never be spent twice).
    fn spent_until(&self, token: &Token, now: Instant) -> Instant {
        let left = token
            .expires_ms()
            .saturating_sub(unix_millis(SystemTime::now()));
        now + self.replay_ttl.max(Duration::from_millis(left))
    }

    fn reserve_now(&self, req: &ReserveRequest) -> Result<ReserveReply, StoreError> {
        let sale = self.sale(&req.sku)?;
        let mut d = lock(&sale);
        let now = Instant::now();
        d.sweep(now);
        let invalid = ReserveReply {
            outcome: Reservation::InvalidToken,
            replayed: false,
            state: None,
        };
        match d.tokens.get(&req.token) {
            Some((spent, _)) if spent.user == req.user => return Ok(d.replay_of(&spent.outcome)),
            // Spent by someone else: refused without spending anything.
            Some(_) => return Ok(invalid),
            None => {}
        }
        // The edge verified the signature; an expiry passed since (while queued) stands.
        if req.token.expires_ms() < unix_millis(SystemTime::now()) {
            return Ok(invalid);
        }
        let user = req.user.clone();
        let held = d.buyers.get(&user).copied().unwrap_or(0);
        let mut state = None;
        let outcome = if held.saturating_add(req.quantity) > req.per_user_limit {
            Reservation::LimitReached
        } else if d.stock < u64::from(req.quantity) {
            Reservation::SoldOut { remaining: d.stock }
        } else {
            d.stock -= u64::from(req.quantity);
            *d.buyers.entry(user.clone()).or_insert(0) += req.quantity;
            let order_id = OrderId::random();
            let order = Order {
                order_id,
                sku: req.sku.to_string(),
                user_id: user.to_string(),
                quantity: req.quantity,
                reserved_at: unix_millis(SystemTime::now()),
            };
            let (loading, until) = (d.loading, self.spent_until(&req.token, now));
            d.orders
                .insert(order_id, KeptOrder::reserved(order, loading, until));
            d.outbox.push_back(order_id);
            state = Some(OrderState::Reserved);
            Reservation::Reserved {
                order_id,
                remaining: d.stock,
            }
        };
        let record = SpentToken {
            user,
            outcome: outcome.clone(),
        };
        let until = self.spent_until(&req.token, now);
        d.remember(req.token, record, until);
        Ok(ReserveReply {
            outcome,
            replayed: false,
            state,
        })
    }
}

fn lock(m: &Mutex<SaleData>) -> MutexGuard<'_, SaleData> {
    // Each step either completes or panics before writing; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ready<'a, T: Send + 'a>(r: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(r))
}
