//! The in-process store: one mutex per sale, so that each step is atomic without any lock
//! shared between sales. For one instance and for `flashgate demo`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{
    Claimed, Compensation, Confirmation, DrainLease, Member, Order, OrderState, Reservation,
    ReserveReply, ReserveRequest, SaleControl, SaleControls, StockLoad, StockReading, Store,
    StoreError, StoreFuture, TicketRecord, TokenHold, Unspent,
};
use crate::local_state::{read_json, write_json, LocalStateError};
use crate::types::unix_millis;
use crate::types::{Epoch, OrderId, Sku, TicketId, Token, UserId, MAX_STOCK};

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
}

/// One sale's pending requests by instance, and until when each count holds.
type PendingCounts = HashMap<String, (u64, Instant)>;

#[derive(Default)]
struct DrainBudget {
    tat_us: Option<f64>,
    rate: Option<u32>,
}

/// A spent token: who spent it and its first outcome, replayed to every later request.
struct SpentToken {
    user: UserId,
    outcome: Reservation,
}

struct SaleData {
    stock: u64,
    epoch: Epoch,
    buyers: HashMap<UserId, u32>,
    /// Spent tokens, each kept until the later of its expiry and the replay TTL.
    tokens: HashMap<Token, (SpentToken, Instant)>,
    /// The same tokens by deadline, earliest first.
    token_expiry: BTreeSet<(Instant, Token)>,
    /// Tokens held by queued requests (see [`Store::hold_token`]), and their tickets.
    holds: HashMap<Token, (TicketId, Instant)>,
    held_by: HashMap<TicketId, Token>,
    /// The holds by deadline, earliest first.
    hold_expiry: BTreeSet<(Instant, Token)>,
    orders: HashMap<OrderId, (Order, OrderState)>,
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
            buyers: HashMap::new(),
            tokens: HashMap::new(),
            token_expiry: BTreeSet::new(),
            holds: HashMap::new(),
            held_by: HashMap::new(),
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
            Reservation::Reserved { order_id, .. } => self.orders.get(order_id).map(|(_, s)| *s),
            _ => None,
        };
        ReserveReply {
            outcome: outcome.clone(),
            replayed: true,
            state,
        }
    }

    /// An order left the outbox: it is kept for replays until `forget_at`.
    fn settle(&mut self, order_id: &OrderId, forget_at: Instant) {
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
            d.orders.insert(order_id, (order, OrderState::Reserved));
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

/// What a graceful stop keeps of the memory store: each sale's stock, buyers, the orders
/// not delivered yet (in outbox order) and its live tokens with their outcomes, so that a
/// token resubmitted after the restart still gets its first answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    sales: Vec<SaleSnapshot>,
    /// What tokens were signed with (see [`MemoryStore::token_secret`]).
    #[serde(default)]
    token_secret: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SaleSnapshot {
    sku: String,
    stock: u64,
    epoch: Epoch,
    buyers: HashMap<String, u32>,
    undelivered: Vec<Order>,
    #[serde(default)]
    tokens: Vec<TokenSnapshot>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TokenSnapshot {
    /// Text, so that a snapshot holding tokens of an older form still loads (they are
    /// skipped: the gateway no longer accepts them).
    token: String,
    user: String,
    /// The outcome (`None`: a token issued and unspent, written by older versions).
    outcome: Option<Reservation>,
    /// How much longer it is kept, in milliseconds.
    ttl_ms: u64,
}

impl MemoryStore {
    /// Orders reserved and not delivered yet, over every sale.
    pub fn undelivered(&self) -> usize {
        self.sales
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|s| lock(s).outbox.len())
            .sum()
    }

    /// Writes every sale's stock, buyers and undelivered orders to `path` (whole, or not
    /// at all); returns how many orders were undelivered.
    pub fn save(&self, path: &std::path::Path) -> Result<usize, LocalStateError> {
        let sales = self.sales.read().unwrap_or_else(PoisonError::into_inner);
        let mut undelivered = 0;
        let snapshot = Snapshot {
            token_secret: self.token_secret(),
            sales: sales
                .iter()
                .map(|(sku, data)| {
                    let d = lock(data);
                    let orders: Vec<Order> = d
                        .outbox
                        .iter()
                        .filter_map(|id| d.orders.get(id).map(|(o, _)| o.clone()))
                        .collect();
                    undelivered += orders.len();
                    let now = Instant::now();
                    let tokens = d
                        .tokens
                        .iter()
                        .filter(|(_, (_, deadline))| *deadline > now)
                        .map(|(token, (spent, deadline))| TokenSnapshot {
                            token: token.to_string(),
                            user: spent.user.to_string(),
                            outcome: Some(spent.outcome.clone()),
                            ttl_ms: deadline.duration_since(now).as_millis() as u64,
                        })
                        .collect();
                    SaleSnapshot {
                        sku: sku.to_string(),
                        stock: d.stock,
                        epoch: d.epoch.clone(),
                        buyers: d.buyers.iter().map(|(u, n)| (u.to_string(), *n)).collect(),
                        undelivered: orders,
                        tokens,
                    }
                })
                .collect(),
        };
        drop(sales);
        write_json(path, &snapshot)?;
        Ok(undelivered)
    }

    /// Loads what [`save`](Self::save) wrote to `path`, if anything; returns whether there
    /// was a snapshot. The caller removes the file once it is serving: from then on this
    /// process holds the state, and a crash must not bring back stale stock.
    pub fn restore(&self, path: &std::path::Path) -> Result<bool, LocalStateError> {
        let Some(snapshot) = read_json::<Snapshot>(path)? else {
            return Ok(false);
        };
        if !snapshot.token_secret.is_empty() {
            *self
                .token_secret
                .write()
                .unwrap_or_else(PoisonError::into_inner) = snapshot.token_secret;
        }
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        for s in snapshot.sales {
            let mut d = SaleData::new(s.stock.min(MAX_STOCK), s.epoch);
            d.buyers = s
                .buyers
                .into_iter()
                .filter_map(|(u, n)| Some((UserId::parse(&u)?, n)))
                .collect();
            for order in s.undelivered {
                d.outbox.push_back(order.order_id);
                d.restored.insert(order.order_id);
                d.orders
                    .insert(order.order_id, (order, OrderState::Reserved));
            }
            let now = Instant::now();
            for t in s.tokens {
                let (Some(token), Some(user), Some(outcome)) =
                    (Token::parse(&t.token), UserId::parse(&t.user), t.outcome)
                else {
                    continue;
                };
                let record = SpentToken { user, outcome };
                d.remember(token, record, now + Duration::from_millis(t.ttl_ms));
            }
            sales.insert(Sku::new(&s.sku), Arc::new(Mutex::new(d)));
        }
        Ok(true)
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

impl Store for MemoryStore {
    fn init_stock(
        &self,
        sku: &Sku,
        stock: u64,
        remembers: Option<&Epoch>,
    ) -> StoreFuture<'_, StockLoad> {
        if let Ok(sale) = self.sale(sku) {
            let d = lock(&sale);
            return ready(Ok(StockLoad::Held {
                units: d.stock,
                epoch: d.epoch.clone(),
            }));
        }
        if remembers.is_some() {
            return ready(Ok(StockLoad::Lost));
        }
        let (sale, _) = self.sale_or_create(sku, stock, Epoch::initial());
        let d = lock(&sale);
        ready(Ok(StockLoad::Created {
            units: d.stock,
            epoch: d.epoch.clone(),
        }))
    }

    fn mark_lost(&self, _sku: &Sku, _epoch: &Epoch) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, Epoch> {
        if stock > MAX_STOCK {
            return ready(Err(StoreError::OutOfRange { units: stock }));
        }
        let epoch = Epoch::loaded();
        let (sale, _) = self.sale_or_create(sku, stock, epoch.clone());
        let mut d = lock(&sale);
        d.stock = stock;
        d.epoch = epoch.clone();
        ready(Ok(epoch))
    }

    fn add_stock(&self, sku: &Sku, delta: i64) -> StoreFuture<'_, u64> {
        ready(self.sale(sku).and_then(|sale| {
            let mut d = lock(&sale);
            let after = i128::from(d.stock) + i128::from(delta);
            if after < 0 || after > i128::from(MAX_STOCK) {
                return Err(StoreError::OutOfRange { units: d.stock });
            }
            d.stock = after as u64;
            Ok(d.stock)
        }))
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, StockReading> {
        ready(self.sale(sku).map(|s| {
            let d = lock(&s);
            StockReading {
                units: d.stock,
                epoch: Some(d.epoch.clone()),
            }
        }))
    }

    fn replay(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> StoreFuture<'_, Option<ReserveReply>> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            match d.tokens.get(token) {
                Some((spent, _)) if spent.user == *user => Some(d.replay_of(&spent.outcome)),
                Some(_) => None,
                None if unspent == Unspent::SpendAsSoldOut => {
                    let outcome = Reservation::SoldOut { remaining: d.stock };
                    let record = SpentToken {
                        user: user.clone(),
                        outcome: outcome.clone(),
                    };
                    let until = self.spent_until(token, now);
                    d.remember(*token, record, until);
                    Some(ReserveReply {
                        outcome,
                        replayed: false,
                        state: None,
                    })
                }
                None => None,
            }
        }))
    }

    fn reserve(&self, req: &ReserveRequest) -> StoreFuture<'_, ReserveReply> {
        ready(self.reserve_now(req))
    }

    fn outbox(&self, sku: &Sku, max: usize) -> StoreFuture<'_, Vec<Order>> {
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            d.outbox
                .iter()
                .take(max)
                .filter_map(|id| d.orders.get(id).map(|(o, _)| o.clone()))
                .collect()
        }))
    }

    fn claim(
        &self,
        sku: &Sku,
        _consumer: &str,
        max: usize,
        _idle: Duration,
    ) -> StoreFuture<'_, Claimed> {
        // One process, one deliverer: everything in the outbox is its to deliver.
        ready(self.sale(sku).map(|sale| {
            let d = lock(&sale);
            Claimed {
                orders: d
                    .outbox
                    .iter()
                    .take(max)
                    .filter_map(|id| d.orders.get(id).map(|(o, _)| o.clone()))
                    .collect(),
                now_ms: unix_millis(SystemTime::now()),
                taken_over: d
                    .outbox
                    .iter()
                    .take(max)
                    .filter(|id| d.restored.contains(id))
                    .copied()
                    .collect(),
                complete: d.outbox.len() <= max,
            }
        }))
    }

    fn touch(
        &self,
        _sku: &Sku,
        _consumer: &str,
        orders: &[OrderId],
    ) -> StoreFuture<'_, Vec<OrderId>> {
        // One deliverer: nobody else takes orders over.
        ready(Ok(orders.to_vec()))
    }

    fn confirm(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        _consumer: &str,
    ) -> StoreFuture<'_, Confirmation> {
        let forget_at = Instant::now() + self.replay_ttl;
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            match d.orders.get_mut(order_id) {
                None => Confirmation::Unknown,
                Some((_, OrderState::Confirmed)) => Confirmation::AlreadyConfirmed,
                Some((_, OrderState::Failed)) => Confirmation::Compensated,
                Some((_, state @ OrderState::Reserved)) => {
                    *state = OrderState::Confirmed;
                    d.settle(order_id, forget_at);
                    Confirmation::Confirmed
                }
            }
        }))
    }

    fn compensate(
        &self,
        sku: &Sku,
        order_id: &OrderId,
        _consumer: &str,
    ) -> StoreFuture<'_, Compensation> {
        let forget_at = Instant::now() + self.replay_ttl;
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let (user, quantity) = match d.orders.get_mut(order_id) {
                None => return Compensation::Unknown,
                Some((_, OrderState::Failed)) => return Compensation::AlreadyFailed,
                Some((_, OrderState::Confirmed)) => return Compensation::Confirmed,
                Some((order, state)) => {
                    *state = OrderState::Failed;
                    (order.user_id.clone(), order.quantity)
                }
            };
            d.stock += u64::from(quantity);
            if let Some(user) = UserId::parse(&user) {
                if let Some(held) = d.buyers.get_mut(&user) {
                    *held = held.saturating_sub(quantity);
                    if *held == 0 {
                        d.buyers.remove(&user);
                    }
                }
            }
            d.settle(order_id, forget_at);
            Compensation::Restored { remaining: d.stock }
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn hold_token(
        &self,
        sku: &Sku,
        token: &Token,
        user: &UserId,
        ticket: &TicketId,
        until_ms: u64,
    ) -> StoreFuture<'_, TokenHold> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            match d.tokens.get(token) {
                Some((spent, _)) if spent.user == *user => {
                    return TokenHold::Spent(d.replay_of(&spent.outcome));
                }
                // Spent by another user: this request's own reserve step refuses it.
                Some(_) => return TokenHold::Held,
                None => {}
            }
            if let Some((held, _)) = d.holds.get(token) {
                return TokenHold::Queued(*held);
            }
            let left = until_ms.saturating_sub(unix_millis(SystemTime::now()));
            let deadline = now + Duration::from_millis(left);
            d.holds.insert(*token, (*ticket, deadline));
            d.held_by.insert(*ticket, *token);
            d.hold_expiry.insert((deadline, *token));
            TokenHold::Held
        }))
    }

    fn release_token(&self, sku: &Sku, token: &Token, ticket: &TicketId) -> StoreFuture<'_, ()> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            if d.holds.get(token).is_some_and(|(held, _)| held == ticket) {
                d.unhold(token);
            }
        }))
    }

    fn ticket_record(&self, sku: &Sku, ticket: &TicketId) -> StoreFuture<'_, Option<TicketRecord>> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            d.sweep(Instant::now());
            let token = d.held_by.get(ticket)?;
            Some(match d.tokens.get(token) {
                Some((spent, _)) => TicketRecord::Decided(d.replay_of(&spent.outcome)),
                None => TicketRecord::Queued,
            })
        }))
    }

    fn take_over(
        &self,
        _sku: &Sku,
        _consumer: &str,
        _live: &[String],
        _min_idle: Duration,
    ) -> StoreFuture<'_, Vec<OrderId>> {
        // One process, one deliverer: nobody else's orders to take.
        ready(Ok(Vec::new()))
    }

    fn share_pending(
        &self,
        sku: &Sku,
        me: &str,
        pending: u64,
        ttl: Duration,
    ) -> StoreFuture<'_, u64> {
        let mut all = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = all.entry(sku.clone()).or_default();
        let now = Instant::now();
        counts.retain(|_, (_, until)| *until > now);
        if pending > 0 && !ttl.is_zero() {
            counts.insert(me.to_owned(), (pending, now + ttl));
        } else {
            counts.remove(me);
        }
        let others = counts
            .iter()
            .filter(|(who, _)| who.as_str() != me)
            .map(|(_, (n, _))| n)
            .sum();
        ready(Ok(others))
    }

    fn lease_drain(&self, sku: &Sku, want: u32, rate: u32) -> StoreFuture<'_, DrainLease> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        let budget = drains.entry(sku.clone()).or_default();
        let now_us = self.epoch.elapsed().as_micros() as f64;
        let (lease, tat) =
            super::lease::grant(budget.tat_us, now_us, budget.rate.unwrap_or(rate), want);
        budget.tat_us = Some(tat);
        ready(Ok(lease))
    }

    fn set_drain_rate(&self, sku: &Sku, rate: u32) -> StoreFuture<'_, ()> {
        let mut drains = self.drains.lock().unwrap_or_else(PoisonError::into_inner);
        drains.entry(sku.clone()).or_default().rate = Some(rate.max(1));
        ready(Ok(()))
    }

    fn set_control(&self, sku: &Sku, control: SaleControl) -> StoreFuture<'_, ()> {
        let mut controls = self.controls.lock().unwrap_or_else(PoisonError::into_inner);
        controls.entry(sku.clone()).or_default().apply(control);
        ready(Ok(()))
    }

    fn controls(&self, sku: &Sku) -> StoreFuture<'_, SaleControls> {
        let mut c = self
            .controls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .copied()
            .unwrap_or_default();
        c.drain_rate = self
            .drains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .and_then(|d| d.rate);
        ready(Ok(c))
    }

    fn claim_layout(&self, _layout: u32) -> StoreFuture<'_, ()> {
        // Its state is this process's (and its own snapshot's): one build reads it.
        ready(Ok(()))
    }

    fn announce(&self, member: &Member, ttl: Duration) -> StoreFuture<'_, Vec<Member>> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let taken = members.get(&member.id).is_some_and(|(held, expires)| {
            held.incarnation != member.incarnation && *expires > now
        });
        if taken {
            return ready(Err(StoreError::Rejected(format!(
                "instance id `{}` is held by another live instance",
                member.id
            ))));
        }
        // A TTL beyond what the clock can add is as good as forever.
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        members.insert(member.id.clone(), (member.clone(), expires));
        ready(Ok(Self::live_members(&mut members)))
    }

    fn members(&self) -> StoreFuture<'_, Vec<Member>> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        ready(Ok(Self::live_members(&mut members)))
    }

    fn leave(&self, member: &Member) -> StoreFuture<'_, ()> {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        if members
            .get(&member.id)
            .is_some_and(|(held, _)| held.incarnation == member.incarnation)
        {
            members.remove(&member.id);
        }
        ready(Ok(()))
    }

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        ready(
            self.sale(sku)
                .map(|sale| lock(&sale).orders.get(order_id).map(|(_, s)| *s)),
        )
    }
}
