//! The sale engine: everything the sale routes, the drains and the deliverer share, and the
//! start-up that loads stock and starts the background tasks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryMode, StoreKind};
use crate::identity::Identity;
use crate::metrics::{Metrics, SaleCounters};
use crate::ratelimit::KeyedLimit;
use crate::sale::Sales;
use crate::store::{Store, StoreError};
use crate::ticket::TicketBook;
use crate::types::{Sku, UserId};

/// How often rate-limit keys whose buckets refilled are forgotten.
const LIMITER_SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Shared state of the sale path.
pub struct Engine {
    /// The sales.
    pub sales: Sales,
    /// Where stock, tokens and orders live.
    pub store: Arc<dyn Store>,
    /// Tickets of admitted requests.
    pub tickets: TicketBook,
    /// Identity header reader.
    pub identity: Identity,
    /// Per-user request limit on sale routes.
    pub per_user: KeyedLimit<UserId>,
    /// Per-IP request limit on sale routes.
    pub per_ip: KeyedLimit<IpAddr>,
    /// How long issued tokens stay valid.
    pub token_ttl: Duration,
    /// How often sales' stock is read back from a shared store; `None` for the memory store.
    pub stock_sync: Option<Duration>,
    /// Woken when an order is reserved, so the deliverer does not wait for its next round.
    pub outbox_ready: Notify,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Each sale's pre-resolved counters.
    counters: HashMap<Sku, SaleCounters>,
}

impl Engine {
    /// Builds the engine for `config` over `store`.
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Self {
        Self::with_metrics(config, store, Arc::new(Metrics::new()))
    }

    /// Builds the engine, recording into `metrics`.
    pub fn with_metrics(config: &Config, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let sales = Sales::from_config(config);
        let counters = sales
            .iter()
            .map(|s| (s.sku.clone(), metrics.for_sale(s.sku.as_str())))
            .collect();
        Self {
            metrics,
            counters,
            sales,
            store,
            tickets: TicketBook::new(config.queue.max_tickets, config.queue.ticket_ttl),
            identity: Identity::new(&config.identity),
            per_user: KeyedLimit::new(config.limits.per_user_rate, config.limits.per_user_burst),
            per_ip: KeyedLimit::new(config.limits.per_ip_rate, config.limits.per_ip_burst),
            token_ttl: config.store.token_ttl,
            stock_sync: (config.store.kind == StoreKind::Redis)
                .then_some(config.store.sync_interval),
            outbox_ready: Notify::new(),
        }
    }

    /// The counters of sale `sku` (every configured sale has them).
    pub fn counters(&self, sku: &Sku) -> Option<&SaleCounters> {
        self.counters.get(sku)
    }

    /// Sets the gauges that are read from live state, just before a scrape.
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        for s in self.sales.iter() {
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
            m.stock
                .with_label_values(&sku)
                .set(s.remaining().min(i64::MAX as u64) as i64);
        }
    }

    /// Loads each sale's stock into the store (the first instance's figure wins) and takes
    /// the store's figure as the sale's remaining stock.
    pub async fn load_stock(&self, config: &Config) -> Result<(), StoreError> {
        for cfg in &config.sales {
            let Some(sale) = self.sales.get(&cfg.sku) else {
                continue;
            };
            let held = self.store.init_stock(&sale.sku, cfg.stock).await?;
            sale.set_remaining(held);
        }
        Ok(())
    }

    /// Starts the drains, the deliverer and the limiter sweeper; they stop on `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<JoinHandle<()>> = self
            .sales
            .iter()
            .map(|sale| {
                tokio::spawn(crate::drain::run(
                    self.clone(),
                    sale.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        // In stream mode the backend consumes the outbox itself; the gateway only reserves.
        if config.delivery.mode == DeliveryMode::Http {
            tasks.push(tokio::spawn(crate::delivery::run(
                self.clone(),
                crate::delivery::Settings::new(config),
                shutdown.clone(),
            )));
        }
        if let Some(every) = self.stock_sync {
            tasks.push(tokio::spawn(sync_stock(
                self.clone(),
                every,
                shutdown.clone(),
            )));
        }
        let engine = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        engine.per_user.sweep();
                        engine.per_ip.sweep();
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        }));
        tasks
    }
}

/// Reads each sale's stock back from the shared store: how an instance learns that another
/// one sold the sale out (the flag then refuses at its edge too) or that stock came back.
///
/// Polling rather than pub/sub: a few GETs a second per sale cost nothing, and a missed
/// message (a reconnect, a restart) cannot leave a flag wrong; the next read corrects it.
async fn sync_stock(engine: Arc<Engine>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for sale in engine.sales.iter() {
            match engine.store.stock(&sale.sku).await {
                Ok(stock) => sale.set_remaining(stock),
                Err(e) => tracing::debug!(sku = %sale.sku, error = %e, "stock sync failed"),
            }
        }
    }
}
