//! The in-process store: one mutex per sale, so that each step is atomic without any lock
//! shared between sales. For one instance and for `flashgate demo`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{
    unix_millis, Compensation, Order, OrderState, Reservation, ReserveReply, ReserveRequest, Store,
    StoreError, StoreFuture,
};
use crate::types::{OrderId, Sku, Token, UserId};

/// How long a spent token's outcome is kept for replays.
const DEFAULT_REPLAY_TTL: Duration = Duration::from_secs(3600);

/// Stock, tokens and orders held in this process.
pub struct MemoryStore {
    sales: RwLock<HashMap<Sku, Arc<Mutex<SaleData>>>>,
    replay_ttl: Duration,
}

enum TokenRecord {
    Issued { user: UserId },
    Spent { user: UserId, outcome: Reservation },
}

#[derive(Default)]
struct SaleData {
    stock: u64,
    buyers: HashMap<UserId, u32>,
    tokens: HashMap<Token, (TokenRecord, Instant)>,
    /// Issued and spent tokens by deadline, oldest first: each kind has one TTL, so each
    /// queue is in deadline order and expired tokens are dropped in O(1) each. An entry
    /// whose token was renewed since (issued, then spent) is told apart by its deadline.
    issued_expiry: VecDeque<(Instant, Token)>,
    spent_expiry: VecDeque<(Instant, Token)>,
    orders: HashMap<OrderId, (Order, OrderState)>,
    outbox: VecDeque<OrderId>,
}

impl SaleData {
    fn sweep(&mut self, now: Instant) {
        for queue in [&mut self.issued_expiry, &mut self.spent_expiry] {
            while let Some(&(deadline, token)) = queue.front() {
                if deadline > now {
                    break;
                }
                queue.pop_front();
                if self.tokens.get(&token).is_some_and(|(_, d)| *d == deadline) {
                    self.tokens.remove(&token);
                }
            }
        }
    }

    fn remember(&mut self, token: Token, record: TokenRecord, deadline: Instant) {
        let queue = match record {
            TokenRecord::Issued { .. } => &mut self.issued_expiry,
            TokenRecord::Spent { .. } => &mut self.spent_expiry,
        };
        queue.push_back((deadline, token));
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
        }
    }

    fn sale(&self, sku: &Sku) -> Result<Arc<Mutex<SaleData>>, StoreError> {
        self.sales
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sku)
            .cloned()
            .ok_or_else(|| StoreError::UnknownSale(sku.clone()))
    }

    fn sale_or_create(&self, sku: &Sku) -> Arc<Mutex<SaleData>> {
        if let Ok(s) = self.sale(sku) {
            return s;
        }
        self.sales
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sku.clone())
            .or_default()
            .clone()
    }

    /// Tokens (issued or spent) held for a sale: for tests of bounded memory.
    pub fn token_count(&self, sku: &Sku) -> usize {
        self.sale(sku).map(|s| lock(&s).tokens.len()).unwrap_or(0)
    }

    fn reserve_now(&self, req: &ReserveRequest) -> Result<ReserveReply, StoreError> {
        let sale = self.sale(&req.sku)?;
        let mut d = lock(&sale);
        let now = Instant::now();
        d.sweep(now);
        let user = match d.tokens.get(&req.token) {
            Some((TokenRecord::Issued { user }, _)) if *user == req.user => user.clone(),
            Some((TokenRecord::Spent { user, outcome }, _)) if *user == req.user => {
                return Ok(ReserveReply {
                    outcome: outcome.clone(),
                    replayed: true,
                });
            }
            // Unknown, expired, or someone else's: refused without spending anything.
            _ => {
                return Ok(ReserveReply {
                    outcome: Reservation::InvalidToken,
                    replayed: false,
                })
            }
        };
        let held = d.buyers.get(&user).copied().unwrap_or(0);
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
            Reservation::Reserved {
                order_id,
                remaining: d.stock,
            }
        };
        let record = TokenRecord::Spent {
            user,
            outcome: outcome.clone(),
        };
        d.remember(req.token, record, now + self.replay_ttl);
        Ok(ReserveReply {
            outcome,
            replayed: false,
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

impl Store for MemoryStore {
    fn init_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, u64> {
        let existed = self.sale(sku).is_ok();
        let sale = self.sale_or_create(sku);
        let mut d = lock(&sale);
        if !existed {
            d.stock = stock;
        }
        ready(Ok(d.stock))
    }

    fn set_stock(&self, sku: &Sku, stock: u64) -> StoreFuture<'_, ()> {
        lock(&self.sale_or_create(sku)).stock = stock;
        ready(Ok(()))
    }

    fn stock(&self, sku: &Sku) -> StoreFuture<'_, u64> {
        ready(self.sale(sku).map(|s| lock(&s).stock))
    }

    fn issue_token(&self, sku: &Sku, user: &UserId, ttl: Duration) -> StoreFuture<'_, Token> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            let now = Instant::now();
            d.sweep(now);
            let token = Token::random();
            d.remember(token, TokenRecord::Issued { user: user.clone() }, now + ttl);
            token
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
    ) -> StoreFuture<'_, Vec<Order>> {
        // One process, one deliverer: everything in the outbox is its to deliver.
        self.outbox(sku, max)
    }

    fn confirm(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, bool> {
        ready(self.sale(sku).map(|sale| {
            let mut d = lock(&sale);
            match d.orders.get_mut(order_id) {
                Some((_, state @ OrderState::Reserved)) => {
                    *state = OrderState::Confirmed;
                    d.outbox.retain(|id| id != order_id);
                    true
                }
                _ => false,
            }
        }))
    }

    fn compensate(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Compensation> {
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
            d.outbox.retain(|id| id != order_id);
            Compensation::Restored { remaining: d.stock }
        }))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }

    fn order_state(&self, sku: &Sku, order_id: &OrderId) -> StoreFuture<'_, Option<OrderState>> {
        ready(
            self.sale(sku)
                .map(|sale| lock(&sale).orders.get(order_id).map(|(_, s)| *s)),
        )
    }
}
