//! What a graceful stop keeps of the memory store, and loading it again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{lock, KeptOrder, MemoryStore, SaleData, SpentToken};
use crate::local_state::{read_json, write_json, LocalStateError};
use crate::store::{Order, OrderState, Reservation, Versioned};
use crate::types::{Epoch, OrderId, Sku, Token, UserId, MAX_STOCK};

/// What a graceful stop keeps of the memory store: each sale's stock, buyers, the orders
/// not delivered yet (in outbox order) and its live tokens with their outcomes, so that a
/// token resubmitted after the restart still gets its first answer.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    sales: Vec<SaleSnapshot>,
    /// What tokens were signed with (see [`MemoryStore::token_secret`]).
    #[serde(default)]
    token_secret: String,
    /// The sales' definitions and their versions.
    #[serde(default)]
    book: Vec<Versioned>,
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
    /// Orders settled and still kept for replays and cancels.
    #[serde(default)]
    settled: Vec<SettledSnapshot>,
    /// Orders (undelivered or settled) reserved before the stock was last loaded: a cancel
    /// gives their units back no more. Absent in snapshots of versions before cancels.
    #[serde(default)]
    stale: Option<Vec<OrderId>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SettledSnapshot {
    order: Order,
    state: OrderState,
    /// Cancelled with its units put back.
    #[serde(default)]
    restocked: bool,
    /// How much longer it is kept, in milliseconds.
    ttl_ms: u64,
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
            book: self
                .book
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sales
                .values()
                .cloned()
                .collect(),
            sales: sales
                .iter()
                .map(|(sku, data)| {
                    let d = lock(data);
                    let orders: Vec<Order> = d
                        .outbox
                        .iter()
                        .filter_map(|id| d.orders.get(id).map(|o| o.order.clone()))
                        .collect();
                    undelivered += orders.len();
                    let now = Instant::now();
                    let settled = d
                        .settled
                        .iter()
                        .filter(|(at, _)| *at > now)
                        .filter_map(|(at, id)| {
                            let kept = d.orders.get(id)?;
                            Some(SettledSnapshot {
                                order: kept.order.clone(),
                                state: kept.state,
                                restocked: kept.restocked,
                                ttl_ms: at.duration_since(now).as_millis() as u64,
                            })
                        })
                        .collect();
                    let stale = Some(
                        d.orders
                            .iter()
                            .filter(|(_, kept)| kept.loading != d.loading)
                            .map(|(id, _)| *id)
                            .collect(),
                    );
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
                        settled,
                        stale,
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
        {
            let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            for v in snapshot.book {
                book.sales.insert(Sku::new(&v.definition.sale.sku), v);
            }
            book.revision += 1;
        }
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        for s in snapshot.sales {
            let mut d = SaleData::new(s.stock.min(MAX_STOCK), s.epoch);
            d.buyers = s
                .buyers
                .into_iter()
                .filter_map(|(u, n)| Some((UserId::parse(&u)?, n)))
                .collect();
            // Loading 1 now; what was reserved before the last loading is 0. A snapshot of
            // an older version does not say: its orders may have been reserved under an
            // earlier loading unless no operator ever loaded the stock.
            d.loading = 1;
            let all_stale = s.stale.is_none() && d.epoch.by_operator();
            let stale: HashSet<OrderId> = s.stale.into_iter().flatten().collect();
            let loading_of = |id: &OrderId| u32::from(!all_stale && !stale.contains(id));
            let now = Instant::now();
            for order in s.undelivered {
                let id = order.order_id;
                d.outbox.push_back(id);
                d.restored.insert(id);
                d.orders
                    .insert(id, KeptOrder::reserved(order, loading_of(&id), now));
            }
            for o in s.settled {
                let id = o.order.order_id;
                let kept_for = now + Duration::from_millis(o.ttl_ms);
                let mut kept = KeptOrder::reserved(o.order, loading_of(&id), kept_for);
                (kept.state, kept.restocked) = (o.state, o.restocked);
                d.orders.insert(id, kept);
                d.settled
                    .push_back((now + Duration::from_millis(o.ttl_ms), id));
            }
            d.settled.make_contiguous().sort_by_key(|(at, _)| *at);
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
