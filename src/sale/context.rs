//! The sale context: the state the sale routes, the drains and the deliverer share, and the
//! stock transitions they make on it (load, adopt, hold, sync). It starts nothing: the
//! gateway composes it and runs the tasks that use it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::config::{
    IdentityConfig, LimitsConfig, QueueConfig, SaleConfig, StoreConfig, StoreKind,
};
use crate::identity::Identity;
use crate::local_state::LocalState;
use crate::log_throttle::warn_repeated;
use crate::metrics::Metrics;
use crate::ratelimit::KeyedLimit;
use crate::sale::outcome::Outcome;
use crate::sale::ticket::{Ticket, TicketBook, TicketStatus};
use crate::sale::{Sale, Sales};
use crate::store::KEY_LAYOUT;
use crate::store::{Replay, StockLoad, StockReading, Store, StoreError, Unspent};
use crate::token::TokenSigner;
use crate::types::{Epoch, OrderId, OwnerTag, Sku, TicketId, Token, UserId};

/// Shared state of the sale path.
pub struct SaleContext {
    /// Every configured sale, by sku.
    pub sales: Sales,
    /// Where stock, tokens and orders live.
    pub store: Arc<dyn Store>,
    /// Tickets of admitted requests.
    pub tickets: TicketBook,
    /// Tokens' recorded outcomes this instance read from the store and answered, as
    /// finished tickets: kept apart from `tickets` (a quarter of its size), so that a
    /// crowd of refused tokens never pushes a buyer's ticket out.
    pub answers: TicketBook,
    /// Identity header reader.
    pub identity: Identity,
    /// Per-user request limit on sale routes.
    pub per_user: KeyedLimit<UserId>,
    /// Per-IP request limit on sale routes.
    pub per_ip: KeyedLimit<IpAddr>,
    /// Per-ticket limit on polls another instance must answer.
    pub ticket_polls: KeyedLimit<TicketId>,
    /// Per-IP limit on polls another instance must answer.
    pub relays_per_ip: KeyedLimit<IpAddr>,
    /// How long issued tokens stay valid.
    pub token_ttl: Duration,
    /// Signs the tokens it issues and verifies those it is given.
    pub tokens: TokenSigner,
    /// What this process's ticket ids start with (and its incarnation in the store's
    /// list of instances).
    pub owner: OwnerTag,
    /// How often sales' stock is read back from the store: other instances change it
    /// (with a shared store), and order workers that finish out of order may leave an older
    /// figure last.
    pub stock_sync: Duration,
    /// True when other instances may share the store (Redis, a Redis Cluster).
    pub shared: bool,
    /// Woken when an order is reserved, so the deliverer does not wait for its next round.
    pub outbox_ready: Notify,
    /// The sales' own tasks (drains, openings), waited for at the gateway's stop.
    pub sale_tasks: TaskTracker,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// What this instance keeps on disk (store epochs, the memory store's snapshot).
    pub local: LocalState,
    /// Names the store in the local state: its kind, address and key prefix.
    store_id: String,
}

impl SaleContext {
    /// The sale `sku` names, or 404 `unknown_sale` (echoing at most 64 characters of it).
    pub fn sale(&self, sku: &str) -> Result<Arc<Sale>, crate::error::GatewayError> {
        self.sales
            .get(sku)
            .ok_or_else(|| crate::error::GatewayError::UnknownSale(sku.chars().take(64).collect()))
    }

    /// Builds the context from its parts.
    pub fn new(parts: ContextParts<'_>) -> Self {
        let ContextParts {
            sales,
            store,
            metrics,
            local,
            queue,
            identity,
            limits,
            store_config,
            token_secret,
        } = parts;

        Self {
            metrics,
            sales,
            store,
            tickets: TicketBook::new(queue.max_tickets, queue.ticket_ttl),
            answers: TicketBook::new((queue.max_tickets / 4).max(1), queue.ticket_ttl),
            identity: Identity::new(identity),
            per_user: KeyedLimit::new(limits.per_user_rate, limits.per_user_burst),
            per_ip: KeyedLimit::new(limits.per_ip_rate, limits.per_ip_burst),
            ticket_polls: KeyedLimit::new(limits.ticket_poll_rate, limits.ticket_poll_burst),
            relays_per_ip: KeyedLimit::new(limits.relay_per_ip_rate, limits.relay_per_ip_burst),
            token_ttl: store_config.token_ttl,
            tokens: TokenSigner::new(token_secret),
            owner: OwnerTag::random(),
            stock_sync: store_config.sync_interval,
            shared: store_config.kind.is_shared(),
            outbox_ready: Notify::new(),
            sale_tasks: TaskTracker::new(),
            local,
            store_id: match store_config.kind {
                StoreKind::Memory => "memory".to_owned(),
                StoreKind::RedisCluster => format!(
                    "cluster {} {}",
                    store_config
                        .urls
                        .iter()
                        .map(|u| crate::config::redact_url(u))
                        .collect::<Vec<_>>()
                        .join(","),
                    store_config.key_prefix
                ),
                StoreKind::Redis => format!(
                    "{} {}",
                    crate::config::redact_url(&store_config.url),
                    store_config.key_prefix
                ),
            },
        }
    }

    /// Ticket `id`, from the book of admitted requests or of answers given.
    pub fn known_ticket(&self, id: &TicketId) -> Option<Ticket> {
        self.tickets.get(id).or_else(|| self.answers.get(id))
    }

    /// The ticket that spends `token`, from either book.
    pub fn ticket_of_token(&self, token: &Token) -> Option<(TicketId, Ticket)> {
        self.tickets
            .by_token(token)
            .or_else(|| self.answers.by_token(token))
    }

    /// Moves ticket `id` to `status` in whichever book holds it.
    pub fn update_ticket(&self, id: &TicketId, status: TicketStatus) {
        self.tickets.update(id, status.clone());
        self.answers.update(id, status);
    }

    /// Moves the tickets of `order` to `outcome` (delivery outcomes), in both books.
    pub fn order_settled(&self, order: &OrderId, outcome: Outcome) {
        self.tickets.update_by_order(order, outcome);
        self.answers.update_by_order(order, outcome);
    }

    /// What the store knows of `token` (`user`'s, in `sale`): its recorded outcome if
    /// spent, the ticket of the queued request that holds it; `unspent` says what to do
    /// with a token neither spent nor held (see [`super::admission::replay_first`]).
    pub async fn replay(
        &self,
        sale: &Sale,
        token: &Token,
        user: &UserId,
        unspent: Unspent,
    ) -> Result<Replay, StoreError> {
        self.store.replay(&sale.sku, token, user, unspent).await
    }

    /// Sets the gauges that are read from live state, just before a scrape.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        for s in &self.sales.all() {
            let sku = [s.sku.as_str()];
            m.queue_depth
                .with_label_values(&sku)
                .set(s.queue.len() as i64);
            m.queue_capacity
                .with_label_values(&sku)
                .set(s.queue.capacity() as i64);
            m.drain_rate
                .with_label_values(&sku)
                .set(i64::from(s.drain_rate()));
            m.drain_share
                .with_label_values(&sku)
                .set(i64::from(s.drain_share()));
            m.stock
                .with_label_values(&sku)
                .set(s.remaining().min(i64::MAX as u64) as i64);
            // 0 with the memory store (one instance, no fleet line): exported all the same.
            let length = s.line.length().min(i64::MAX as u64) as i64;
            m.line_length.with_label_values(&sku).set(length);
            let cursor = s.line.cursor().min(i64::MAX as u64) as i64;
            m.line_cursor.with_label_values(&sku).set(cursor);
            m.prequeue_size
                .with_label_values(&sku)
                .set(s.prequeue.waiting() as i64);
            m.outbox_lag
                .with_label_values(&sku)
                .set(s.outbox_lag().as_secs_f64());
            let floor = s.terms().settings.steered.map_or(0, |b| b.min);
            m.drain_rate_min
                .with_label_values(&sku)
                .set(i64::from(floor));
        }
    }

    /// Loads each sale's stock into the store (the first instance's figure wins) and takes
    /// the store's figure as the sale's remaining stock. A store that has lost a sale this
    /// instance loaded before is not loaded again: the sale is held (see [`Self::hold`]).
    pub async fn load_stock(&self, sales: &[SaleConfig]) -> Result<(), StoreError> {
        // Before anything is read or written: another layout's keys would be misread.
        self.store.claim_layout(KEY_LAYOUT).await?;
        for cfg in sales {
            let Some(sale) = self.sales.get(&cfg.sku) else {
                continue;
            };
            let known = self.local.epoch(&self.store_id, &sale.sku);
            match self
                .store
                .init_stock(&sale.sku, cfg.stock, known.as_ref())
                .await?
            {
                StockLoad::Held { units, epoch } | StockLoad::Created { units, epoch } => {
                    self.adopt(&sale, units, &epoch);
                }
                StockLoad::Lost => {
                    self.hold(&sale);
                    self.leave_tombstone(&sale).await;
                }
            }
        }
        Ok(())
    }

    /// Takes the store's figure and epoch for a sale, releasing a hold.
    pub fn adopt(&self, sale: &Sale, units: u64, epoch: &Epoch) {
        if let Err(e) = self.local.remember(&self.store_id, &sale.sku, epoch) {
            // Not fatal: the next start might not notice a store that lost its state.
            tracing::error!(sku = %sale.sku, error = %e, "cannot record the stock's epoch locally");
        }
        if sale.is_held() {
            tracing::warn!(sku = %sale.sku, units, "stock loaded again; the sale is no longer held");
        }
        sale.set_held(false);
        self.metrics
            .sale_held
            .with_label_values(&[sale.sku.as_str()])
            .set(0);
        sale.set_remaining(units);
    }

    /// Holds a sale whose state the store lost: selling the configured stock again would
    /// sell units that were sold already. It stays held until an operator loads stock.
    pub fn hold(&self, sale: &Sale) {
        if !sale.is_held() {
            tracing::error!(sku = %sale.sku,
                "the store lost this sale's stock; the sale is held until an operator loads stock");
        }
        sale.set_held(true);
        self.metrics
            .sale_held
            .with_label_values(&[sale.sku.as_str()])
            .set(1);
    }

    /// Applies one stock reading from a shared store: how an instance learns that another
    /// sold the sale out, that an operator loaded stock, or that the store lost its state.
    /// `known` is the epoch this instance knew when it asked: if it adopted another since
    /// (an operator loaded stock meanwhile), the reading is stale and is skipped.
    fn apply_reading(
        &self,
        sale: &Sale,
        known: Option<Epoch>,
        reading: Result<StockReading, StoreError>,
    ) {
        if self.local.epoch(&self.store_id, &sale.sku) != known {
            return;
        }
        match reading {
            Ok(StockReading { units, epoch }) => match (epoch, known) {
                (Some(now), Some(known)) if now != known => {
                    if now.by_operator() {
                        self.adopt(sale, units, &now);
                    } else {
                        // Re-created by a first start that did not know the sale had been
                        // loaded: the store lost its state in between.
                        self.hold(sale);
                    }
                }
                (Some(now), _) if sale.is_held() && !now.by_operator() => {}
                (Some(now), _) => self.adopt(sale, units, &now),
                (None, _) if sale.is_held() => {}
                (None, _) => sale.set_remaining(units),
            },
            Err(StoreError::UnknownSale(_)) if known.is_some() => self.hold(sale),
            Err(e) => tracing::debug!(sku = %sale.sku, error = %e, "stock sync failed"),
        }
    }

    /// Warns the other instances, through the store, that it lost a sale this one had
    /// loaded: a first start then holds it too instead of loading the configured stock.
    async fn leave_tombstone(&self, sale: &Sale) {
        let Some(epoch) = self.local.epoch(&self.store_id, &sale.sku) else {
            return;
        };
        if let Err(e) = self.store.mark_lost(&sale.sku, &epoch).await {
            tracing::debug!(sku = %sale.sku, error = %e, "cannot mark the sale lost in the store yet");
        }
    }

    /// Applies what operators stored for `sale` (pause, hold, capacity, drain rate: set on
    /// any instance, meant for all); what the store cannot say now stays as it is.
    pub async fn sync_controls(&self, sale: &Sale) {
        let Ok(c) = self.store.controls(&sale.sku).await else {
            return;
        };
        // Only changes are sent: the drain wakes on every send.
        if let Some(paused) = c.paused.filter(|&p| p != sale.is_paused()) {
            sale.set_paused(paused);
        }
        if let Some(draining) = c.draining.filter(|&d| d != sale.is_draining()) {
            sale.set_draining(draining);
        }
        if let Some(capacity) = c.capacity {
            if sale.queue.capacity() != capacity && sale.queue.set_capacity(capacity).is_err() {
                // Stored by an instance configured with a larger max_capacity.
                warn_repeated!("the stored queue capacity is outside 1..=max_capacity of this instance; keeping its own", sku = %sale.sku, capacity, max = sale.queue.max_capacity());
            }
        }
        if let Some(rate) = c.drain_rate {
            sale.adopt_drain_rate(rate);
        }
    }

    /// Reads each sale's stock back from the shared store once: how an instance learns
    /// that another one sold the sale out (the flag then refuses at its edge too), that
    /// stock came back, or that the store lost its state.
    pub async fn sync_stock(&self) {
        // A count outlives a few missed syncs, not an instance that stopped.
        let hold = self.stock_sync.saturating_mul(4);
        for sale in &self.sales.all() {
            let mine = sale.pending() as u64;
            let others = match self
                .store
                .share_pending(&sale.sku, self.owner.as_str(), mine, hold)
                .await
            {
                Ok(others) => usize::try_from(others).unwrap_or(usize::MAX),
                // Counted as none: the store's trouble must not refuse the crowd here.
                Err(_) => 0,
            };
            self.sync_controls(sale).await;
            let known = self.local.epoch(&self.store_id, &sale.sku);
            let reading = self.store.stock(&sale.sku).await;
            let lost = matches!(reading, Err(StoreError::UnknownSale(_)));
            self.apply_reading(sale, known, reading);
            // Recorded with the stock figure just read: what the others reserve from now on
            // is taken off their count ([`super::elsewhere`]).
            sale.set_pending_elsewhere(others);
            if lost && sale.is_held() {
                self.leave_tombstone(sale).await;
            }
        }
    }
}

impl SaleContext {
    /// Reads how far each sale's delivery runs behind: the orders not delivered yet and the
    /// age of the oldest (the outbox holds an order until the gateway's deliverer settled
    /// it; one store round trip a sale). Not in stream mode, where the backend's consumers
    /// keep what they acknowledged. A sale whose outbox the store did not show keeps its
    /// last figures.
    pub async fn read_outbox_lags(&self) {
        for sale in &self.sales.all() {
            if let Ok(depth) = self.store.outbox_depth(&sale.sku).await {
                let now = crate::types::unix_millis(std::time::SystemTime::now());
                let age = depth
                    .oldest_reserved_at
                    .map_or(0, |at| now.saturating_sub(at));
                sale.set_outbox(Duration::from_millis(age), depth.orders);
            }
        }
    }
}

impl SaleContext {
    /// Steers each "auto" drain rate by its outbox (see [`super::steer`]), `before`
    /// holding each sale's outbox size at the last steering, and when; the new rate goes to
    /// the store first (for every instance), then here.
    pub async fn steer_drains(
        &self,
        max_lag: Duration,
        before: &mut HashMap<Sku, (u64, std::time::Instant)>,
    ) {
        for sale in &self.sales.all() {
            let Some(bounds) = sale.terms().settings.steered else {
                continue;
            };
            if sale.is_ended() || sale.is_paused() {
                continue;
            }
            let backlog = !sale.queue.is_empty() || sale.pending_elsewhere() > 0;
            let rate = sale.drain_rate();
            let (orders, now) = (sale.outbox_orders(), std::time::Instant::now());
            let growth = match before.insert(sale.sku.clone(), (orders, now)) {
                Some((was, at)) if now > at => {
                    (orders as f64 - was as f64) / now.duration_since(at).as_secs_f64()
                }
                _ => 0.0,
            };
            let sight = super::steer::Sight { orders, growth };
            let (next, why) = super::steer::next_rate(rate, sight, max_lag, backlog, bounds);
            sale.set_steered(why);
            if next == rate {
                continue;
            }
            // Only over the rate it steered from: one set meanwhile (an operator's, a new
            // definition's) stands, and this instance takes it at its next sync.
            match self.store.steer_drain_rate(&sale.sku, rate, next).await {
                Ok(true) => sale.set_drain_rate(next),
                Ok(false) => {}
                Err(e) => {
                    warn_repeated!("cannot store the steered drain rate", sku = %sale.sku, error = %e)
                }
            }
        }
    }
}

/// What an [`SaleContext`] is built from: the components it shares and the config sections it
/// reads.
pub struct ContextParts<'a> {
    /// The sales.
    pub sales: Sales,
    /// The store, behind its breaker.
    pub store: Arc<dyn Store>,
    /// Where everything is counted.
    pub metrics: Arc<Metrics>,
    /// What this instance keeps on disk.
    pub local: LocalState,
    /// `[queue]`: the ticket book's bounds.
    pub queue: &'a QueueConfig,
    /// `[identity]`.
    pub identity: &'a IdentityConfig,
    /// `[limits]`: the per-user and per-IP rate limits.
    pub limits: &'a LimitsConfig,
    /// `[store]`: token lifetime, stock sync, and the store's name in the local state.
    pub store_config: &'a StoreConfig,
    /// `cluster.secret`: what tokens are signed with.
    pub token_secret: &'a str,
}
